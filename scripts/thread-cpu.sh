#!/usr/bin/env bash
# Runs `kairos bench ingest` and reports, besides its events/s, the CPU time the writer and
# committer threads used (from /proc, in clock ticks). On a shared, noisy host throughput
# moves by +-20% between runs of the same build; a thread's CPU time moves far less, so
# alternating runs of two builds compare better by it.
#
# usage: scripts/thread-cpu.sh BINARY EVENTS DEFINITIONS(default|none)
set -euo pipefail
bin=$1 events=$2 defs=$3
out=$(mktemp)
KAIROS_LOG=warn "$bin" bench ingest --events "$events" --no-baseline --definitions "$defs" >"$out" 2>&1 &
pid=$!
declare -A ticks
while kill -0 "$pid" 2>/dev/null; do
  for t in /proc/"$pid"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null || true)
    case "$name" in
      kairos-writer | kairos-commit)
        if read -r -a stat <"$t/stat" 2>/dev/null; then
          ticks[$name]=$((stat[13] + stat[14]))
        fi
        ;;
    esac
  done
  sleep 0.3
done
rate=$(awk '/durable ingest/ {print $4}' "$out")
echo "$(basename "$bin") ${rate:-?} events/s writer=${ticks[kairos-writer]:-?} committer=${ticks[kairos-commit]:-?} ticks"
rm -f "$out"
