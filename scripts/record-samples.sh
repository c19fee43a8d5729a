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
du -sh data
