#!/bin/sh
# Re-record the sample runs in data/ (as root: creates and removes a loop and a zram device).
#     scripts/record-samples.sh [all|engine|qemu|multiqueue]    (default: all; qemu also replays them)
# Small on purpose (a few MB in all): a bounded number of requests and events. Each uses the default
# probes and stores what tracing cost it (--measure-overhead: the same workload untraced first, then traced).
set -eu
cd "$(dirname "$0")/.."
PT=.venv/bin/plugtrace
WHICH=${1:-all}
# The loop runs on QEMU's ring (--ring-setup plain: io_uring_setup() without flags, as block/io_uring.c):
# notebook 05-real-qemu sets device-plug and defer beside real QEMU, and the other loop runs are compared
# with those two. The zram runs are the engine's speed, on fio's ring (coop, given after COMMON).
COMMON="--ring-setup plain --size 256M --devices 2 --iodepth 32 --requests 20000 --max-events 40000 --measure-overhead --quiet"

# A sample must show the engine at untraced speed: its traced half keeps >= 0.8 of its untraced
# half's IOPS, and submit latency p50 < 200 us and p99 < 2 ms. On this 2-CPU kind of machine the
# ratio of one short run moves by tens of percent from one attempt to the next, so a run that
# misses is recorded again, at most 3 times, and every attempt is printed (data/README.md gives them).
true_sample() {  # true_sample DIR: prints the run's numbers; fails when tracing or start-up distorted them
    .venv/bin/python - "$1" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/meta.json"))
o, s = m["tracing_overhead"], m["summary"]
p50, p99 = s["submit_latency_p50_ns"] / 1e3, s["submit_latency_p99_ns"] / 1e3
print(f"   traced/untraced {o['ratio']:.3f}, submit p50 {p50:.0f} us, p99 {p99:.0f} us", file=sys.stderr)
sys.exit(0 if o["ratio"] >= 0.8 and p50 < 200 and p99 < 2000 else 1)
PY
}

record() {  # record NAME ARGS...: replace data/NAME with a new recording that is a true sample
    name=$1; shift
    for attempt in 1 2 3; do
        rm -rf "data/$name"
        echo "== data/$name (attempt $attempt): plugtrace record $*" >&2
        $PT record "$@" -o "data/$name" >/dev/null
        if true_sample "data/$name"; then return 0; fi
    done
    echo "data/$name: no attempt kept 0.8 of untraced IOPS with p50 < 200 us and p99 < 2 ms; the last is kept" >&2
}

# One device with two queues on two threads (notebook 07-multi-queue): the model's two plug designs, and
# real QEMU 10.0 with a queue per iothread (iothread-vq-mapping)
multiqueue() {
    MQ="--device loop --ring-setup plain --size 256M --queues 2 --threads 2 --iodepth 16 --requests 20000 --max-events 40000 --measure-overhead --quiet"
    for strategy in device-plug defer; do
        record "mq-$strategy" --strategy "$strategy" --mode events $MQ
    done
    rm -rf data/qemu-10.0-mq
    echo "== data/qemu-10.0-mq: plugtrace qemu --qemu 10.0 --queues 2 --iothreads per-queue" >&2
    $PT qemu --qemu 10.0 --device loop --size 256M --queues 2 --iothreads per-queue --iodepth 16 --duration 1 \
        --mode events --max-events 60000 --accel tcg --measure-overhead --quiet -o data/qemu-10.0-mq
}
if [ "$WHICH" = multiqueue ]; then multiqueue; exec du -sh data; fi

if [ "$WHICH" != qemu ]; then
for strategy in immediate device-plug defer loop-iteration; do
    record "$strategy" --device loop --strategy "$strategy" --mode events $COMMON
done
record defer-interleave --device loop --strategy defer --interleave 0.2 --mode events $COMMON
record defer-aggregate --device loop --strategy defer --interleave 0.2 --mode aggregate $COMMON
record defer-zram --device zram --strategy defer --mode events $COMMON --ring-setup coop
record defer-zram-aggregate --device zram --strategy defer --mode aggregate $COMMON --ring-setup coop
fi
[ "$WHICH" = engine ] && exec du -sh data
multiqueue
# Real QEMU guests on the same load (2 disks on one iothread, iodepth 32 each, 4 KiB random reads):
# notebook 05-real-qemu compares them with device-plug and defer above
QEMU_COMMON="--device loop --size 256M --disks 2 --iothreads shared --iodepth 32 --duration 1 --mode events --max-events 60000 --accel tcg --measure-overhead --quiet"
for version in 7.2 10.0; do
    rm -rf "data/qemu-$version"
    echo "== data/qemu-$version: plugtrace qemu --qemu $version $QEMU_COMMON" >&2
    $PT qemu --qemu "$version" $QEMU_COMMON -o "data/qemu-$version"
done
# each QEMU run replayed on the model with its design's own strategy (notebook 05, the report)
for version in 7.2 10.0; do
    rm -rf "data/replay-$version"
    echo "== data/replay-$version: plugtrace replay data/qemu-$version" >&2
    $PT replay "data/qemu-$version" --quiet -o "data/replay-$version" >/dev/null
done
du -sh data
