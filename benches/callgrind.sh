#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: repeatable whatever else the
# machine is doing, unlike timings. Runs the bare Pingora proxy and Tollgate (auth, limits,
# metering, metrics; access log off) under callgrind in turn, turns instrumentation on only
# after a warm-up, drives wrk -c4 for MEASURE seconds, and prints Ir per request for both.
# The profiles stay in OUT (default target/callgrind) for callgrind_annotate.
#
#   benches/callgrind.sh          (TOLLGATE=path/to/other/build to profile another build;
#                                  BARE_ARGS=--contract for the bare proxy writing SPEC's headers)
set -euo pipefail
cd "$(dirname "$0")/.."

MEASURE=${MEASURE:-4}
OUT=${OUT:-target/callgrind}
TOLLGATE=${TOLLGATE:-target/release/tollgate}
command -v valgrind >/dev/null || { ${SUDO:-$([ "$(id -u)" = 0 ] || echo sudo)} apt-get install -y -qq valgrind; }
command -v wrk >/dev/null || { ${SUDO:-$([ "$(id -u)" = 0 ] || echo sudo)} apt-get install -y -qq wrk; }
cargo build --release --quiet --bin tollgate --example mock_upstream --example bare_proxy --example seed_keys
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

mock_port=$(free_port); port=$(free_port)
target/release/examples/mock_upstream --listen "127.0.0.1:$mock_port" --no-record >/dev/null &
pids+=($!)
target/release/examples/seed_keys --store "$dir/data" --keys 1000 --print 100 >"$dir/keys.txt" 2>/dev/null
cat >"$dir/tollgate.yaml" <<EOF
server: { threads: 1, pid_file: $dir/tollgate.pid, upgrade_sock: $dir/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listen: [ { addr: "127.0.0.1:$port" } ]
storage: { path: $dir/data }
upstreams:
  openai: { backends: ["http://127.0.0.1:$mock_port"], keys: [sk-bench-provider-key] }
limits: { requests_per_minute: 100000000, tokens_per_day: 100000000000, max_concurrent: 100000 }
access_log: false
EOF

# profile NAME PROGRAM ARGS...: Ir per request of PROGRAM serving 127.0.0.1:$port.
profile() {
  local name=$1
  shift
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.out" "$@" >"$dir/$name.log" 2>&1 &
  local vg=$!
  pids+=($vg)
  wait_port "$port" || { cat "$dir/$name.log"; exit 1; }
  # Under valgrind the store takes a while to open (in the background; requests wait for it):
  # the warm-up starts once one request has been answered.
  local key
  key=$(head -1 "$dir/keys.txt")
  for _ in $(seq 1 240); do
    curl -sf -o /dev/null -m 30 -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm up"}]}' \
      "http://127.0.0.1:$port/v1/chat/completions" && break
    sleep 0.5
  done
  BENCH_KEYS="$dir/keys.txt" wrk -t1 -c4 -d3s --timeout 30s -s benches/wrk/chat.lua "http://127.0.0.1:$port" >/dev/null
  callgrind_control -i on "$vg" >/dev/null
  BENCH_KEYS="$dir/keys.txt" wrk -t1 -c4 -d"${MEASURE}s" --timeout 30s -s benches/wrk/chat.lua "http://127.0.0.1:$port" >"$dir/wrk.txt"
  callgrind_control -i off "$vg" >/dev/null
  kill -INT "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  local requests total path
  requests=$(awk '/^RESULT/ {print $8}' "$dir/wrk.txt")
  [ "${requests:-0}" -gt 0 ] || { echo "$name: no request completed"; cat "$dir/wrk.txt" "$dir/$name.log"; exit 1; }
  total=$(callgrind_annotate "$OUT/$name.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # The connection tasks alone: what the requests cost, without the work done once a second
  # (Tollgate's write-behind, timers), which spreads over however many requests valgrind let by.
  path=$(callgrind_annotate --inclusive=yes "$OUT/$name.out" 2>/dev/null \
    | awk '/ServerApp>::process_new::\{\{closure\}\} \[/ && !n++ {gsub(",", "", $1); print $1}')
  printf '%-10s %8d requests  %12d Ir  %8d Ir per request, %8d of them in the connection tasks\n' \
    "$name" "$requests" "$total" $((total / requests)) $((${path:-0} / requests))
}

# BARE_ARGS unquoted: a list of flags.
profile bare target/release/examples/bare_proxy --listen "127.0.0.1:$port" --upstream "127.0.0.1:$mock_port" ${BARE_ARGS:-}
profile tollgate "$TOLLGATE" serve -c "$dir/tollgate.yaml"
echo "profiles: $OUT/{bare,tollgate}.out (callgrind_annotate --inclusive=yes $OUT/tollgate.out | less)"
