#!/usr/bin/env bash
# Load benchmark of `serve --dev` with h2load over HTTP/2 and ~10 KB Pod reviews.
# Prints: requests/s at saturation, p50/p99 latency at a fixed 2,000 requests/s, and RSS idle,
# under load, and with 10,000 DGDs in the cache. Usage: bench/load.sh [seconds per run, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
source bench/lib.sh
need_h2load
cargo build --release --locked -q
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/make_inputs.py "$work"

port=18443
health=18080
url="https://127.0.0.1:$port/mutate?timeout=5s"

start() {
  target/release/dynamo-tenancy serve --dev --dev-dir "$work/dev" \
    --listen 127.0.0.1:$port --health-listen 127.0.0.1:$health "$@" 2>"$work/server.log" &
  server=$!
  wait_until "$server" "$work/server.log" health_ready "$health"
}
stop() { kill -TERM "$server"; wait "$server" 2>/dev/null || true; }

load() { # load NAME h2load-args...
  local name=$1; shift
  h2 "$name" "$url" "$@"
  h2_summary "$name"
}

echo "== serve --dev, empty registry (pod review $(stat -c %s "$work/pod.json") bytes)"
start
sleep 1
echo "RSS idle: $(rss $server)"
echo "saturation: 8 connections x 32 streams, 1 h2load thread, ${secs}s"
load saturation -t 1 -c 8 -m 32 -D "$secs" --warm-up-time=2
echo "  $(percentiles "$work/saturation.log")"
echo "RSS under load (peak): $(hwm $server)"
echo "fixed rate: 4 clients x 500 req/s = 2,000 req/s, ${secs}s"
load fixed -t 1 -c 4 -m 1 --rps 500 -D "$secs"
echo "  $(percentiles "$work/fixed.log")"
stop

echo "== serve --dev --existing 10,000 DGDs"
start --existing "$work/dgds.json"
sleep 1
echo "RSS idle with 10,000 DGDs: $(rss $server)"
load cached -t 1 -c 8 -m 32 -D "$secs" --warm-up-time=2
echo "  $(percentiles "$work/cached.log")"
echo "RSS under load with 10,000 DGDs (peak): $(hwm $server)"
stop

echo "== the cache filled through the real list and watch path (fake API server, 10,000 DGDs)"
cargo test --release --locked -q --test cache -- --ignored --nocapture rss_with_10000_dgds 2>/dev/null | grep '^RSS'
