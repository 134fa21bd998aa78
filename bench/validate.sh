#!/usr/bin/env bash
# `validate` over N DGDs (the upstream vllm-agg manifest, renamed, each at its own path) spread over
# 100 k8s namespaces, in one multi-document YAML file: wall time and peak RSS of the release
# binary, at several sizes to show the cost is linear. Usage: bench/validate.sh [runs per size, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shared="${DYNAMO_TENANCY_SHARED:-$(cd .. && pwd)/shared}"
cargo build --release --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$shared/upstream/dynamo/examples-vllm__agg.yaml" "$work" <<'PY'
import pathlib, sys
src = pathlib.Path(sys.argv[1]).read_text()
body = src[src.index("apiVersion"):]
for count in (2500, 5000, 10000, 20000):
    docs = []
    for i in range(count):
        doc = body.replace("name: vllm-agg", f"name: dgd-{i}\n  namespace: team-{i % 100}", 1)
        doc = doc.replace("spec:\n", f"spec:\n  dynamoNamespace: default/model-{i // 100}\n", 1)
        docs.append(doc)
    pathlib.Path(sys.argv[2], f"dgds-{count}.yaml").write_text("---\n" + "---\n".join(docs))
PY
printf '%8s %10s %12s %14s %12s\n' DGDs MB "best wall s" "per DGD (us)" "peak RSS MiB"
for count in 2500 5000 10000 20000; do
  file="$work/dgds-$count.yaml"
  best=""; peak=0
  for _ in $(seq "$runs"); do
    out=$( { /usr/bin/time -f '%e %M' target/release/dynamo-tenancy validate "$file" >/dev/null; } 2>&1 | tail -1)
    wall=${out% *}; rss=${out#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; fi
    [ "$rss" -gt "$peak" ] && peak=$rss
  done
  mb=$(awk "BEGIN{printf \"%.1f\", $(stat -c %s "$file")/1048576}")
  printf '%8d %10s %12s %14.0f %12.1f\n' "$count" "$mb" "$best" "$(awk "BEGIN{print $best*1e6/$count}")" "$(awk "BEGIN{print $peak/1024}")"
done
