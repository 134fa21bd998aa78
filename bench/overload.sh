#!/usr/bin/env bash
# Overload: `serve --dev` (10,000 DGDs, the pod's among them) offered twice what it can serve.
# First its saturation rate R (8 connections x 32 streams, as bench/load.sh), then about 2R
# requests/s of the ~10 KB Pod review from 16 clients with up to 64 streams each (1,024 at once,
# far past --max-in-flight), once per limit given (default: 256, the default, and 100000, no
# shedding in effect). For each: the 200s per second and their p50/p99, the 503s (count, share,
# p99; they should be fast), the peak RSS (VmHWM, reset before the run) against idle, and mid-run
# where the excess waits: reviews in the server's handlers, bytes unread in its sockets.
# Goal: p99 of the served under 50 ms, memory bounded.
# Usage: bench/overload.sh [seconds per run, default 15] [max-in-flight ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
shift || true
limits=("$@")
[ ${#limits[@]} -gt 0 ] || limits=(256 100000)
source bench/lib.sh
need_h2load
cargo build --release --locked -q --bin dynamo-tenancy
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
make_inputs

port=18443
health=18080
url="https://127.0.0.1:$port/mutate?timeout=5s"
start() {
  target/release/dynamo-tenancy serve --dev --dev-dir "$work/dev" --existing "$work/dgds.json" \
    --listen 127.0.0.1:$port --health-listen 127.0.0.1:$health --drain-delay 0s "$@" \
    2>"$work/server.log" &
  server=$!
  wait_until "$server" "$work/server.log" health_ready "$health"
}
stop() { kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=; }
# Forget the peak RSS so far (Linux: "5" to clear_refs resets VmHWM to the current RSS).
reset_peak() { echo 5 > "/proc/$1/clear_refs"; }
count() { awk -v s="$2" '$2 == s' "$work/$1.log" | wc -l; }

echo "machine: $(machine_note), load average $(cut -d' ' -f1 /proc/loadavg)"
echo "== saturation: serve --dev --max-in-flight 256, 8 connections x 32 streams, ${secs}s"
start
h2 warm "$url" -t 1 -c 8 -m 32 -D 1
h2 sat "$url" -t 1 -c 8 -m 32 -D "$secs"
h2_summary sat
stop
rate=$(h2_rps sat)
per_client=$(python3 -c "print(max(1, round(2 * $rate / 16)))")
echo "saturation: $rate req/s; offering 2x: 16 clients x $per_client req/s, up to 64 streams each"

rows=()
for limit in "${limits[@]}"; do
  echo "== overload: --max-in-flight $limit, ${secs}s"
  start --max-in-flight "$limit"
  sleep 1
  idle=$(rss_mib "$server")
  h2 "warm-$limit" "$url" -t 1 -c 16 -m 4 -D 1
  reset_peak "$server"
  h2 "over-$limit" "$url" -t 1 -c 16 -m 64 --rps "$per_client" -D "$secs" &
  loader=$!
  # Mid-run: where the excess waits. Reviews in the server's handlers (its in-flight gauge)
  # against bytes the server has not read yet: in its sockets' receive queues, plus what h2load
  # wrote that the full receive queues have not taken in (the client sockets' send queues).
  sleep "$(python3 -c "print($secs / 2)")"
  held=$(curl -s "http://127.0.0.1:$health/metrics" | awk '/^dynamo_tenancy_admission_in_flight / {print $2}')
  unread=$( { ss -tnH state established "( sport = :$port )" | awk '{print $1}'
              ss -tnH state established "( dport = :$port )" | awk '{print $2}'; } |
            awk '{q += $1} END {printf "%.1f", q / 1048576}')
  wait "$loader"
  peak=$(hwm_mib "$server")
  h2_summary "over-$limit"
  stop
  total=$(wc -l < "$work/over-$limit.log")
  ok=$(count "over-$limit" 200)
  shed=$(count "over-$limit" 503)
  read -r _ p50 p99 _ < <(latency "$work/over-$limit.log" 200)
  read -r _ _ shed_p99 _ < <(latency "$work/over-$limit.log" 503)
  other=$((total - ok - shed))
  row=$(python3 - <<PY
total, ok, shed, secs = $total, $ok, $shed, $secs
share = f"{100 * shed / total:.0f}%" if total else "-"
print(f"| $limit | {total / secs:,.0f} | {ok / secs:,.0f} | $p50 / $p99 | {shed:,} ({share}) | $shed_p99 | $other | $idle → $peak MiB | $held / $unread MiB |")
PY
)
  rows+=("$row")
done

echo
echo "offered about 2 x $(python3 -c "print(f'{$rate:,.0f}')") req/s (the saturation rate)"
echo "| --max-in-flight | answered req/s | served (200) req/s | p50 / p99 of 200s (ms) | shed (503) | p99 of 503s (ms) | other | RSS idle → peak | mid-run: in handlers / unread in sockets |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
