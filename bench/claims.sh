#!/usr/bin/env bash
# The latency a claim adds to a DGD CREATE: the release binary twice against the in-process fake
# API server (tests/support/fake_api.rs), with claims and with --no-claims, 2,000 sequential
# validating reviews each over HTTP/2, client and servers on this machine; and Pod reviews on both.
# Usage: bench/claims.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DYNAMO_TENANCY_SHARED="${DYNAMO_TENANCY_SHARED:-$(cd .. && pwd)/shared}"
cargo test --release --locked -q --test claims claim_latency -- --ignored --nocapture 2>&1 \
  | grep -E 'claims:'
