#!/usr/bin/env bash
# Side by side with the floor: examples/floor.rs (TLS + HTTP/2 + read the body + a fixed allow, the
# least a webhook on this stack can do) and `serve --dev`, loaded in turn in the same run with the
# same h2load settings and the same ~10 KB Pod CREATE review. `serve --dev` gets the 10,000 DGDs
# of bench/make_inputs.py (the pod's DGD among them), so every answer carries its JSON patch.
#
# For each server: requests/s at saturation (8 connections x 32 streams, after a 1 s warm-up), the
# server's CPU time per request during it, and p50/p99 at a fixed 2,000 requests/s (4 clients x
# 500/s, one stream each, as bench/load.sh). h2load paces --rps with a timer that fires about every
# 10 ms for all clients together, so "2,000/s" arrives as trains of ~5 requests per client, sent
# back to back on its one stream: the p99 includes that queueing, for both servers alike.
# Prints a table and appends a row to bench/RESULTS.md. Usage: bench/compare.sh [seconds, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
source bench/lib.sh
need_h2load
cargo build --release --locked -q --example floor --bin dynamo-tenancy
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
make_inputs

note=$(machine_note)
load_before=$(cut -d' ' -f1 /proc/loadavg)

floor_port=19443
ours_port=18443
ours_health=18080
target/release/examples/floor --listen 127.0.0.1:$floor_port 2>"$work/floor.log" &
floor_pid=$!; pids+=("$floor_pid")
target/release/dynamo-tenancy serve --dev --dev-dir "$work/dev" --existing "$work/dgds.json" \
  --listen 127.0.0.1:$ours_port --health-listen 127.0.0.1:$ours_health --drain-delay 0s \
  2>"$work/ours.log" &
ours_pid=$!; pids+=("$ours_pid")
wait_until "$floor_pid" "$work/floor.log" https_up "$floor_port"
wait_until "$ours_pid" "$work/ours.log" health_ready "$ours_health"

declare -A url pid sat cpu fixed fixed_rps
url[floor]="https://127.0.0.1:$floor_port/mutate?timeout=5s"
url[ours]="https://127.0.0.1:$ours_port/mutate?timeout=5s"
pid[floor]=$floor_pid
pid[ours]=$ours_pid
tick_us=$((1000000 / $(getconf CLK_TCK)))

# Every answer must be a 200, or the numbers compare different work.
check_ok() {
  local n bad
  n=$(wc -l < "$work/$1.log")
  bad=$(awk '$2 != 200' "$work/$1.log" | wc -l)
  [ "$n" -gt 0 ] && [ "$bad" -eq 0 ] || { echo "run $1: $bad of $n answers were not 200" >&2; exit 1; }
}

echo "pod review $(stat -c %s "$work/pod.json") bytes; machine: $note, load average $load_before"
for s in floor ours; do
  echo "== saturation, $s: 8 connections x 32 streams, 1 h2load thread, ${secs}s"
  h2 "warm-$s" "${url[$s]}" -t 1 -c 8 -m 32 -D 1
  before=$(cpu_ticks "${pid[$s]}")
  h2 "sat-$s" "${url[$s]}" -t 1 -c 8 -m 32 -D "$secs"
  after=$(cpu_ticks "${pid[$s]}")
  h2_summary "sat-$s"
  check_ok "sat-$s"
  sat[$s]=$(h2_rps "sat-$s")
  n=$(wc -l < "$work/sat-$s.log")
  cpu[$s]=$(( (after - before) * tick_us / n ))
done
for s in floor ours; do
  echo "== fixed rate, $s: 4 clients x 500 req/s = 2,000 req/s, ${secs}s"
  h2 "fixed-$s" "${url[$s]}" -t 1 -c 4 -m 1 --rps 500 -D "$secs"
  h2_summary "fixed-$s"
  check_ok "fixed-$s"
  read -r _ p50 p99 _ < <(latency "$work/fixed-$s.log")
  fixed[$s]="$p50 / $p99"
  fixed_rps[$s]=$(h2_rps "fixed-$s")
done

ratio=$(python3 -c "print(f'{${sat[ours]} / ${sat[floor]}:.2f}')")
cpu_ratio=$(python3 -c "print(f'{${cpu[ours]} / max(1, ${cpu[floor]}):.2f}')")
fmt() { python3 -c "print(f'{float($1):,.0f}')"; }
echo
echo "| server | req/s at saturation | server CPU per request | p50 / p99 at 2,000 req/s (achieved) |"
echo "|---|---|---|---|"
for s in floor ours; do
  echo "| $s | $(fmt "${sat[$s]}") | ${cpu[$s]} µs | ${fixed[$s]} ms ($(fmt "${fixed_rps[$s]}") req/s) |"
done
echo "| ours / floor | ${ratio}× | ${cpu_ratio}× | |"

commit=$(git rev-parse --short HEAD)
# Dirty when what the binaries are built from has changes (not bench/, docs, or fuzz/).
[ -z "$(git status --porcelain -- src examples Cargo.toml Cargo.lock)" ] || commit="$commit-dirty"
[ "$note" = quiet ] && note="quiet, load $load_before" || note="$note, load $load_before"
row="| $(date -u +%Y-%m-%d) | \`$commit\` | $secs | $(fmt "${sat[floor]}") | $(fmt "${sat[ours]}") | **${ratio}×** | ${cpu[floor]} / ${cpu[ours]} µs | ${fixed[floor]} | ${fixed[ours]} | $note |"
echo "$row" >> bench/RESULTS.md
echo
echo "appended to bench/RESULTS.md:"
echo "$row"
