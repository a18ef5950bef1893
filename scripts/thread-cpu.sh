#!/usr/bin/env bash
# Runs `kairos bench ingest` and reports, besides its events/s, the CPU time the writer,
# committer and recommendations threads and all threads together (the load generator's
# included) used (from /proc, in clock ticks), then that of every server thread. "total"
# leaves out the main thread, which only generates the request bodies before the timed
# run (its ticks are printed beside it). It also reports the bytes the process wrote to
# the disk (/proc/PID/io), which show the store's write amplification.
# On a shared, noisy host throughput moves by +-20% between runs of the same build; a
# thread's CPU time moves far less, so alternating runs of two builds compare better by it.
#
# usage: scripts/thread-cpu.sh BINARY EVENTS DEFINITIONS(default|none)
set -euo pipefail
bin=$1 events=$2 defs=$3
out=$(mktemp)
KAIROS_LOG=warn "$bin" bench ingest --events "$events" --no-baseline --definitions "$defs" >"$out" 2>&1 &
pid=$!
# Per thread (name/tid), its latest total; threads of one name are summed at the end.
declare -A ticks
written=0
while kill -0 "$pid" 2>/dev/null; do
  for t in /proc/"$pid"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null || true)
    if [ -n "$name" ] && read -r -a stat <"$t/stat" 2>/dev/null; then
      ticks["$name/${t##*/}"]=$((stat[13] + stat[14]))
    fi
  done
  wb=$(awk '/^write_bytes/ {print $2}' /proc/"$pid"/io 2>/dev/null || true)
  written=${wb:-$written}
  sleep 0.3
done
declare -A sum
total=0
main=0
for k in "${!ticks[@]}"; do
  n=${k%/*}
  if [ "${k##*/}" = "$pid" ]; then
    # The main thread generates the request bodies before the timed run starts.
    main=${ticks[$k]}
    continue
  fi
  sum[$n]=$((${sum[$n]:-0} + ticks[$k]))
  total=$((total + ticks[$k]))
done
rate=$(awk '/durable ingest/ {print $4}' "$out")
echo "$(basename "$bin") ${rate:-?} events/s writer=${sum[kairos-writer]:-?} committer=${sum[kairos-commit]:-?} recs=${sum[kairos-recs]:-?} total=$total ticks (+$main generating the requests) written=$((written / 1048576)) MB"
# Every server thread, busiest first; tokio-rt-worker holds the HTTP workers of both the
# server and the load generator, which share one runtime in `bench ingest`.
for n in "${!sum[@]}"; do
  case "$n" in kairos-* | tokio-rt-worker | fjall*) echo "  $n ${sum[$n]}" ;; esac
done | sort -k2 -nr
rm -f "$out"
