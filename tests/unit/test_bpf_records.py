"""Our eBPF programs' records and messages, without loading anything (no root)."""

from pathlib import Path

import pytest

from plugtrace.tracing.bpfprobes import EVENTS
from plugtrace.tracing.libbpf import explain_log, record_dtype
from plugtrace.tracing.probes import PROBES


@pytest.mark.parametrize("table", sorted(EVENTS))
def test_each_record_in_the_c_header_carries_its_tables_columns(table):
    """probes/records.h is the one definition: the ring reader's dtype comes from it and must hold
    every column the probe's table declares (block_rq's rwbs is spelled from its cmd_flags)."""
    spec = next(p for p in PROBES if p.table == table and "events" in p.modes)
    dtype = record_dtype(EVENTS[table].record, ring_header=True)
    assert dtype.names[:2] == ("rb_len", "rb_pg") and dtype.itemsize % 8 == 0
    derived = {"rwbs"} if table == "block_rq" else set()
    assert {name for name, _ in spec.columns} - derived <= set(dtype.names), dtype


# what libbpf 1.1 printed on Linux 6.18 for a program the verifier refused (block_plug.bpf.c with a
# counter bumped without a NULL check)
VERIFIER_LOG = """\
libbpf: prog 'unplug': BPF program load failed: Permission denied
libbpf: prog 'unplug': -- BEGIN PROG LOAD LOG --
0: R1=ctx() R10=fp0
; int BPF_PROG(unplug, struct request_queue *q, unsigned int depth, bool explicit) @ block_plug.bpf.c:17
0: (79) r7 = *(u64 *)(r1 +8)          ; R1=ctx() R7=scalar()
; { uint32_t k = depth; uint64_t *c = bpf_map_lookup_elem(&unplug_nr_rq, &k); *c += 1; } @ block_plug.bpf.c:19
1: (63) *(u32 *)(r10 -24) = r7        ; R7=scalar() R10=fp0 fp-24=????scalar()
2: (bf) r2 = r10                      ; R2=fp0 R10=fp0
;  @ block_plug.bpf.c:0
3: (07) r2 += -24                     ; R2=fp-24
; { uint32_t k = depth; uint64_t *c = bpf_map_lookup_elem(&unplug_nr_rq, &k); *c += 1; } @ block_plug.bpf.c:19
4: (18) r1 = 0xffff8881051d8000       ; R1=map_ptr(map=unplug_nr_rq,ks=4,vs=8)
6: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=unplug_nr_rq,ks=4,vs=8)
7: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
libbpf: prog 'unplug': failed to load: -13
libbpf: failed to load object '/tmp/probes/build/block_plug.bpf.o'
"""
BROKEN = "{ uint32_t k = depth; uint64_t *c = bpf_map_lookup_elem(&unplug_nr_rq, &k); *c += 1; }"


def test_a_verifier_log_becomes_one_line_naming_the_c_source_line(tmp_path: Path):
    expected = (
        f"the verifier rejected unplug: R0 invalid mem access 'map_value_or_null' at block_plug.bpf.c:19: {BROKEN}"
    )
    assert explain_log(VERIFIER_LOG, []) == expected
    # older kernels quote the line without its place: it is found in the sources
    older = "\n".join(line.split(" @ ")[0] for line in VERIFIER_LOG.splitlines())
    source = tmp_path / "block_plug.bpf.c"
    source.write_text("\n" * 18 + "\t" + BROKEN + "\n")
    assert explain_log(older, [tmp_path]) == expected
    assert explain_log(older, []).endswith(f"at source: {BROKEN}")


def test_a_missing_kernel_feature_is_libbpfs_own_reason():
    log = (
        "libbpf: prog 'submit_pos': failed to find kernel BTF type ID of 'io_uring_submit_req': -3\n"
        "libbpf: prog 'submit_pos': failed to prepare load attributes: -3\n"
        "libbpf: failed to load object 'uring_submits.bpf.o'\n"
    )
    said = explain_log(log, [])
    assert "failed to find kernel BTF type ID of 'io_uring_submit_req'" in said and "\n" not in said
