/*
 * pattern.h - a verifiable data pattern: every 8-byte word holds a function of its absolute byte offset
 * and a per-run seed, so a block read back can be checked without keeping a copy of what was written.
 */
#pragma once
#include <stdint.h>

/* Fill `len` bytes (whole words) of `buf`, which is written at byte `offset`. */
void pt_fill_pattern(char *buf, uint32_t len, uint64_t offset, uint64_t seed);
/* -1 when the `len` bytes of `buf`, read at byte `offset`, match; else the byte index of the first bad word. */
int64_t pt_check_pattern(const char *buf, uint32_t len, uint64_t offset, uint64_t seed);
