#!/bin/sh
# Re-record the sample runs in data/ (as root: creates and removes a loop and a zram device).
# Small on purpose (a few MB in all): a bounded number of requests and events. Each uses the default
# probes and stores what tracing cost it (--measure-overhead: the same workload untraced first, then traced).
set -eu
cd "$(dirname "$0")/.."
PT=.venv/bin/plugtrace
COMMON="--size 256M --devices 2 --iodepth 32 --requests 20000 --max-events 40000 --measure-overhead --quiet"

record() {  # record NAME ARGS...: replace data/NAME with a new recording
    name=$1; shift
    rm -rf "data/$name"
    echo "== data/$name: plugtrace record $*" >&2
    $PT record "$@" -o "data/$name"
}

for strategy in immediate device-plug defer loop-iteration; do
    record "$strategy" --device loop --strategy "$strategy" --mode events $COMMON
done
record defer-interleave --device loop --strategy defer --interleave 0.2 --mode events $COMMON
record defer-aggregate --device loop --strategy defer --interleave 0.2 --mode aggregate $COMMON
record defer-zram --device zram --strategy defer --mode events $COMMON
record defer-zram-aggregate --device zram --strategy defer --mode aggregate $COMMON
# Real QEMU guests on the same load (2 disks on one iothread, iodepth 32 each, 4 KiB random reads):
# notebook 05-real-qemu compares them with device-plug and defer above
QEMU_COMMON="--device loop --size 256M --disks 2 --iothreads shared --iodepth 32 --duration 1 --mode events --max-events 60000 --accel tcg --measure-overhead --quiet"
for version in 7.2 10.0; do
    rm -rf "data/qemu-$version"
    echo "== data/qemu-$version: plugtrace qemu --qemu $version $QEMU_COMMON" >&2
    $PT qemu --qemu "$version" $QEMU_COMMON -o "data/qemu-$version"
done
du -sh data
