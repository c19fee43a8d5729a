/* pattern.c - the data pattern of pattern.h. */
#include <string.h>
#include "pattern.h"

static inline uint64_t pt_word(uint64_t off, uint64_t seed)
{
    uint64_t x = off ^ (seed * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

void pt_fill_pattern(char *buf, uint32_t len, uint64_t offset, uint64_t seed)
{
    for (uint32_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w = pt_word(offset + i, seed);
        memcpy(buf + i, &w, 8);
    }
}

int64_t pt_check_pattern(const char *buf, uint32_t len, uint64_t offset, uint64_t seed)
{
    for (uint32_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w = pt_word(offset + i, seed), got;
        memcpy(&got, buf + i, 8);
        if (got != w)
            return i;
    }
    return -1;
}
