#!/usr/bin/env bash
# Soak: SECONDS (default 600) of Pod reviews at RPS (default 4000, about half of capacity on this
# 2-core machine) against the release binary whose cluster is the in-process fake API server,
# with a certificate rotation by symlink swap every 30 s and a DGD created (and claimed) and one
# deleted every second. Prints a line per 30 s (requests, failures, RSS, live claims) and fails on
# any failed request or RSS growth. Usage: bench/soak.sh [seconds] [rps]
set -euo pipefail
cd "$(dirname "$0")/.."
export DYNAMO_TENANCY_SHARED="${DYNAMO_TENANCY_SHARED:-$(cd .. && pwd)/shared}"
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 bench/make_inputs.py "$work" >/dev/null
SOAK_SECONDS="${1:-600}" SOAK_RPS="${2:-4000}" SOAK_BODY="$work/pod.json" \
  cargo test --release --locked -q --test soak -- --ignored --nocapture
