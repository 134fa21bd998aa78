# Shell functions shared by bench/load.sh, bench/compare.sh and bench/overload.sh. Source it from
# the repository root after `set -euo pipefail`; the functions use $work (a scratch directory).

# h2load (Debian's nghttp2-client), installed when missing.
need_h2load() {
  command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
}

# The ~10 KB Pod CREATE review ($work/pod.json) and 10,000 DGDs ($work/dgds.json).
make_inputs() { python3 bench/make_inputs.py "$work" >/dev/null; }

# Memory of a process from /proc: current RSS and its peak (VmHWM), in MiB.
rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wait_until PID LOG CMD...: retries CMD for up to 10 s while PID lives; else shows LOG and fails.
wait_until() {
  local pid=$1 log=$2; shift 2
  for _ in $(seq 100); do
    "$@" >/dev/null 2>&1 && return
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not become ready" >&2; cat "$log" >&2; return 1
}

# Any TLS answer on the HTTPS port (the floor has no health port).
https_up() { curl -sk -o /dev/null "https://127.0.0.1:$1/"; }
# serve's /readyz on its health port.
health_ready() { curl -sf "http://127.0.0.1:$1/readyz"; }

# h2 NAME URL H2LOAD-ARGS...: POSTs $work/pod.json with h2load; its summary goes to $work/NAME.out
# and its per-request log (start, status, duration in µs) to $work/NAME.log.
h2() {
  local name=$1 url=$2; shift 2
  rm -f "$work/$name.log"  # h2load appends to an existing log
  h2load -H 'content-type: application/json' -d "$work/pod.json" --log-file "$work/$name.log" \
    "$@" "$url" > "$work/$name.out"
}

# h2load's own summary lines of run NAME, indented and tagged.
h2_summary() { grep -E "^finished in|^requests:|^status codes:" "$work/$1.out" | sed "s/^/  [$1] /"; }

# Requests per second that h2load reports for run NAME (all statuses).
h2_rps() { sed -nE 's/^finished in .*, ([0-9.]+) req\/s.*/\1/p' "$work/$1.out"; }

# h2load reports no percentiles; its per-request log gives them.
# latency LOG [STATUS]: "COUNT P50 P99 MAX" (ms) over the requests with STATUS (default 200);
# "0 - - -" when there are none.
latency() {
  python3 - "$1" "${2:-200}" <<'PY'
import sys
d = sorted(int(l.split()[2]) for l in open(sys.argv[1]) if l.split()[1] == sys.argv[2])
if not d:
    print("0 - - -")
else:
    pick = lambda q: d[min(len(d) - 1, int(q * len(d)))] / 1000
    print(f"{len(d)} {pick(0.50):.3f} {pick(0.99):.3f} {d[-1] / 1000:.3f}")
PY
}

# percentiles LOG: the human line bench/load.sh prints.
percentiles() {
  local n p50 p99 max
  read -r n p50 p99 max < <(latency "$1")
  echo "p50 $p50 ms, p99 $p99 ms, max $max ms over $n requests"
}

# Whether another engineer's fuzzer or a compiler shares the machine right now (for the records).
machine_note() {
  local busy=()
  pgrep -f 'fuzz/target|cargo-fuzz|cargo fuzz' >/dev/null && busy+=("fuzzer running")
  pgrep -x rustc >/dev/null && busy+=("rustc running")
  if [ ${#busy[@]} -eq 0 ]; then echo "quiet"; else (IFS=,; echo "${busy[*]}"); fi
}
