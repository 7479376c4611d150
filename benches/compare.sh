#!/usr/bin/env bash
# Side-by-side benchmark (make bench): the same chat-completion load, on loopback, against
#   (a) the mock upstream directly,
#   (b) a bare Pingora passthrough proxy (examples/bare_proxy.rs): the floor,
#   (c) Tollgate with authentication, limits, metering and metrics (access log off),
#   (d) (c) with a fresh Idempotency-Key on every request,
#   (e) SSE streams through (b) and through (c),
# then a fixed 2,000 requests/s through (a), (b) and (c) in turn for the added p99, Tollgate's own
# tollgate_overhead_seconds over those runs, its peak RSS with 100,000 keys in the store, and
# thousands of SSE streams held open at once through (b) and (c): RSS with half and with all of them
# open, and from the difference what each further stream costs.
#
# The gateway under test (bare proxy or Tollgate, one worker thread) runs on core 0; the load
# generators (wrk for closed-loop throughput, oha for the fixed rate) and the mock upstream run
# on core 1. "gw CPU" is the gateway's CPU time per request, from /proc: the cost that the
# throughput ratio reflects only when the gateway's core is the one that is full ("gw busy").
#
# Environment: DURATION (per closed-loop run, default 3s), ROUNDS (default 3), CONNECTIONS
# (default 64), RATE (fixed-rate runs, default 2000), RATE_DURATION (default 5s), RATE_ROUNDS
# (rounds of the fixed-rate trio, default 3), RATE_CONNECTIONS (default 20), LATENCY_DURATION
# (one-request-at-a-time runs, default 2s), LATENCY_ROUNDS (default 5), KEYS (in the store, default 100000), KEYS_USED
# (how many of them the load takes in turn, default 1000),
# HOLD_STREAMS (default 9900: each proxied stream takes two descriptors in the gateway, and the
# hard open-files limit here is 20,000; see README), SKIP_HOLD=1 to skip that part, TOLLGATE
# (the gateway binary, default target/release/tollgate), CACHE_MB (Tollgate's storage.cache_mb;
# unset, the default of 64), BASELINE (another Tollgate build, e.g. an older commit's: it serves
# its own copy of the same store and takes its turn with (b) and (c) in the closed-loop rounds,
# which is what a before/after needs on a machine whose speed drifts from minute to minute; it
# adds about 15 s a round; ROUNDS=6 or more, and SKIP_HOLD=1, for a before/after), CONTRACT=1
# (a third proxy takes its turn in the closed-loop rounds: the bare proxy writing, with fixed
# values, the headers SPEC §3.6 and §3.7 put on every exchange (bare_proxy --contract); what the
# contract's headers alone cost, before any check, count or metering).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-2000}
RATE_DURATION=${RATE_DURATION:-5s}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-20}
RATE_ROUNDS=${RATE_ROUNDS:-3}
LATENCY_DURATION=${LATENCY_DURATION:-2s}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-5}
KEYS=${KEYS:-100000}
KEYS_USED=${KEYS_USED:-1000}
HOLD_STREAMS=${HOLD_STREAMS:-9900}
# Another build of the gateway to measure (e.g. an older commit's, for a before/after).
TOLLGATE=${TOLLGATE:-target/release/tollgate}

sudo_cmd=$([ "$(id -u)" = 0 ] || echo sudo)
command -v wrk >/dev/null || { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq wrk; }
# oha sends a fixed rate evenly spaced and times each request from when it was due; Debian has no
# package, so it is built once from crates.io (about 7 minutes here), at a pinned version so its
# JSON report stays the same.
oha=$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")
if [ ! -x "$oha" ]; then
  echo "building the load generator oha 1.16.0 from crates.io (once)..."
  cargo install --locked --quiet oha --version 1.16.0
fi
cargo build --release --quiet --bin tollgate --example mock_upstream --example bare_proxy --example seed_keys

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# taskset execs the program, so $! is the program's own pid (for its CPU time and RSS).
pin() { if [ "$(nproc)" -ge 2 ]; then echo taskset -c "$1"; fi; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_per_request() { # TICKS REQUESTS -> µs
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz / n * 1e6}'
}
rss_mib() { awk -v f="$2" '$1 == f":" {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# CPU time the VM's host took from this machine (all cores), and its share of a span.
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }
steal_share() { # TICKS0 TICKS1 T0 T1
  awk -v s="$(($2 - $1))" -v a="$3" -v b="$4" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
    'BEGIN {printf "%.1f %%", s / hz / (b - a) / n * 100}'
}

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

mock_port=$(free_port); bare_port=$(free_port); timed_port=$(free_port); port=$(free_port)
admin_port=$(free_port); metrics_port=$(free_port)

$(pin 1) target/release/examples/mock_upstream --listen "127.0.0.1:$mock_port" --no-record >"$dir/mock.log" &
pids+=($!)
$(pin 0) target/release/examples/bare_proxy --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$mock_port" >"$dir/bare.log" 2>&1 &
bare=$!
pids+=($bare)
if [ -n "${CONTRACT:-}" ]; then
  contract_port=$(free_port)
  $(pin 0) target/release/examples/bare_proxy --listen "127.0.0.1:$contract_port" --upstream "127.0.0.1:$mock_port" --contract >"$dir/contract.log" 2>&1 &
  contract=$!
  pids+=($contract)
fi
# A second bare proxy that also times each request over the span of tollgate_overhead_seconds
# (--span); only the one-request-at-a-time runs use it, so the floor above stays bare.
$(pin 0) target/release/examples/bare_proxy --listen "127.0.0.1:$timed_port" --upstream "127.0.0.1:$mock_port" --span >"$dir/timed.log" 2>&1 &
timed=$!
pids+=($timed)

echo "seeding $KEYS keys into the store..."
target/release/examples/seed_keys --store "$dir/data" --keys "$KEYS" --print "$KEYS_USED" >"$dir/keys.txt"

# Limits high enough never to refuse, so that every check still runs on every request.
cat >"$dir/tollgate.yaml" <<EOF
server: { threads: 1, pid_file: $dir/tollgate.pid, upgrade_sock: $dir/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listen: [ { addr: "127.0.0.1:$port" } ]
admin: { listen: "127.0.0.1:$admin_port", token: bench-admin-token-0123456789 }
metrics: { listen: "127.0.0.1:$metrics_port" }
storage: { path: $dir/data${CACHE_MB:+, cache_mb: $CACHE_MB} }
upstreams:
  openai: { backends: ["http://127.0.0.1:$mock_port"], keys: [sk-bench-provider-key] }
limits:
  requests_per_minute: 100000000
  requests_per_day: 1000000000
  tokens_per_minute: 1000000000
  tokens_per_day: 100000000000
  max_concurrent: 100000
access_log: false
EOF
if [ -n "${BASELINE:-}" ]; then
  base_port=$(free_port)
  cp -r "$dir/data" "$dir/base-data"
  sed -e "s#127.0.0.1:$port#127.0.0.1:$base_port#" -e "s#$dir/data#$dir/base-data#" \
    -e "s#$dir/tollgate.pid#$dir/base.pid#" -e "s#$dir/upgrade.sock#$dir/base.sock#" \
    -e "s#^admin: .*##" -e "s#^metrics: .*##" "$dir/tollgate.yaml" >"$dir/base.yaml"
  $(pin 0) "$BASELINE" serve -c "$dir/base.yaml" >"$dir/base.log" 2>&1 &
  base=$!
  pids+=($base)
fi
$(pin 0) "$TOLLGATE" serve -c "$dir/tollgate.yaml" >"$dir/tollgate.log" 2>&1 &
gw=$!
pids+=($gw)
for p in "$mock_port" "$bare_port" "$timed_port" "$port" "$metrics_port" ${base_port:-} ${contract_port:-}; do
  wait_port "$p" || { echo "port $p did not open"; cat "$dir"/*.log; exit 1; }
done
# The store opens in the background; the first request waits for it.
warm_up() { # PORT LOG: one request through a Tollgate, or its log and exit
  curl -sf -o /dev/null -H "Authorization: Bearer $(head -1 "$dir/keys.txt")" -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm up"}]}' \
    "http://127.0.0.1:$1/v1/chat/completions" || { echo "the gateway on port $1 refused the warm-up request"; cat "$2"; exit 1; }
}
warm_up "$port" "$dir/tollgate.log"
[ -z "${BASELINE:-}" ] || warm_up "$base_port" "$dir/base.log"

# Waits (up to 15 s) until no gateway is using its core: work left over from one run
# (Tollgate's write-behind of thousands of records) must not land in the next.
optional_ticks() { if [ -n "$1" ]; then cpu_ticks "$1"; else echo 0; fi; }
settle() {
  local g0 b0 g1 b1 o0 o1 k0 k1 i
  for i in $(seq 1 30); do
    g0=$(cpu_ticks "$gw"); b0=$(cpu_ticks "$bare"); o0=$(optional_ticks "${base:-}"); k0=$(optional_ticks "${contract:-}"); sleep 0.5
    g1=$(cpu_ticks "$gw"); b1=$(cpu_ticks "$bare"); o1=$(optional_ticks "${base:-}"); k1=$(optional_ticks "${contract:-}")
    [ $((g1 - g0 + b1 - b0 + o1 - o0 + k1 - k0)) -le 2 ] && break
  done
  settled_halves=$((settled_halves + i))
}
settled_halves=0

# run KEY URL GATEWAY_PID [ENV...]: wrk for DURATION; appends req/s, p50, p99 (ms), the
# gateway's CPU time per request (µs) and how busy its core was to the lists under KEY.
declare -A RPS P50 P99 CPU BUSY
run() {
  local key=$1 url=$2 pid=$3
  shift 3
  settle
  env "$@" $(pin 1) wrk -t1 -c"$CONNECTIONS" -d1s -s benches/wrk/chat.lua "$url" >/dev/null # warm-up
  local t0 c0 t1 c1 result
  t0=$(date +%s.%N); c0=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  env "$@" $(pin 1) wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 10s -s benches/wrk/chat.lua "$url" >"$dir/wrk.txt"
  t1=$(date +%s.%N); c1=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  result=$(grep '^RESULT' "$dir/wrk.txt") || { cat "$dir/wrk.txt"; exit 1; }
  read -r _ rps p50 p99 mean non2xx sockerr total <<<"$result"
  if [ "$non2xx" != 0 ] || [ "$sockerr" != 0 ]; then
    echo "$key: $non2xx non-2xx answers and $sockerr socket errors out of $total; not a valid run" >&2
    exit 1
  fi
  local hz ticks
  hz=$(getconf CLK_TCK)
  ticks=$((c1 - c0))
  RPS[$key]+=" $rps"
  P50[$key]+=" $(awk -v v="$p50" 'BEGIN {printf "%.3f", v / 1000}')"
  P99[$key]+=" $(awk -v v="$p99" 'BEGIN {printf "%.3f", v / 1000}')"
  if [ "$pid" = - ]; then CPU[$key]+=" -"; BUSY[$key]+=" -"; else
    CPU[$key]+=" $(cpu_per_request "$ticks" "$total")"
    BUSY[$key]+=" $(awk -v t="$ticks" -v hz="$hz" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", t / hz / (b - a) * 100}')"
  fi
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
row() { # KEY LABEL: the medians of the rounds
  printf '%-34s %10.0f %9s %9s %10s %8s\n' "$2" "$(median "${RPS[$1]}")" "$(median "${P50[$1]}")" \
    "$(median "${P99[$1]}")" "$(median "${CPU[$1]}")" "$(median "${BUSY[$1]}")"
}

direct="http://127.0.0.1:$mock_port"
bare_url="http://127.0.0.1:$bare_port"
tg="http://127.0.0.1:$port"
keys="BENCH_KEYS=$dir/keys.txt"

started_rss=$(rss_mib "$gw" VmRSS)
echo "closed loop: wrk -t1 -c$CONNECTIONS, $DURATION per run; bare proxy and Tollgate take turns, $ROUNDS rounds, medians shown [at ${SECONDS} s]"
steal0=$(steal_ticks); t0=$(date +%s.%N)
run a "$direct" - X=1
for round in $(seq 1 "$ROUNDS"); do
  run b "$bare_url" "$bare" X=1
  [ -z "${CONTRACT:-}" ] || run k "http://127.0.0.1:$contract_port" "$contract" X=1
  # With a BASELINE, the two builds swap places every round: whichever runs second was seen
  # to gain from it on this VM.
  if [ -n "${BASELINE:-}" ] && [ $((round % 2)) = 0 ]; then
    run o "http://127.0.0.1:$base_port" "$base" "$keys"
    run c "$tg" "$gw" "$keys"
  else
    run c "$tg" "$gw" "$keys"
    [ -z "${BASELINE:-}" ] || run o "http://127.0.0.1:$base_port" "$base" "$keys"
  fi
  run eb "$bare_url" "$bare" BENCH_STREAM=1
  run ec "$tg" "$gw" "$keys" BENCH_STREAM=1
done
steal1=$(steal_ticks); t1=$(date +%s.%N)
printf '%-34s %10s %9s %9s %10s %8s\n' scenario "req/s" "p50 ms" "p99 ms" "gw CPU µs" "gw busy%"
row a "(a) direct to the mock"
row b "(b) bare Pingora proxy"
[ -z "${CONTRACT:-}" ] || row k "(b) writing the contract's headers"
row c "(c) Tollgate"
[ -z "${BASELINE:-}" ] || row o "(c) with the BASELINE build"
row eb "(e) SSE, bare Pingora proxy"
row ec "(e) SSE, Tollgate"
awk -v c="$(median "${RPS[c]}")" -v b="$(median "${RPS[b]}")" -v cc="$(median "${CPU[c]}")" -v cb="$(median "${CPU[b]}")" \
  'BEGIN {printf "(c)/(b): throughput %.3f; CPU per request, (b)/(c): %.3f\n", c / b, cb / cc}'
awk -v c="$(median "${RPS[ec]}")" -v b="$(median "${RPS[eb]}")" -v cc="$(median "${CPU[ec]}")" -v cb="$(median "${CPU[eb]}")" \
  'BEGIN {printf "SSE, Tollgate/bare: throughput %.3f; CPU per request, bare/Tollgate: %.3f\n", c / b, cb / cc}'
if [ -n "${CONTRACT:-}" ]; then
  awk -v k="$(median "${RPS[k]}")" -v b="$(median "${RPS[b]}")" -v ck="$(median "${CPU[k]}")" -v cb="$(median "${CPU[b]}")" \
    'BEGIN {printf "the contract'"'"'s headers alone: throughput %.3f of (b); CPU per request, (b)/them: %.3f (+%.1f µs)\n", k / b, cb / ck, ck - cb}'
  echo "per round, CPU µs: bare${CPU[b]}; with the contract's headers${CPU[k]}; Tollgate${CPU[c]}"
fi
echo "(SSE: 16 content events per response, no delay between them)"
echo "CPU time the VM host took (steal) during these rounds: $(steal_share "$steal0" "$steal1" "$t0" "$t1") of the cores"
if [ -n "${BASELINE:-}" ]; then
  echo "BASELINE: $BASELINE"
  awk -v c="$(median "${CPU[c]}")" -v o="$(median "${CPU[o]}")" -v b="$(median "${CPU[b]}")" \
    'BEGIN {printf "CPU per request: this build %.1f µs, BASELINE %.1f µs (%+.1f %%); (b)/(c) %.3f against (b)/BASELINE %.3f\n", c, o, (c - o) / o * 100, b / c, b / o}'
  echo "per round, CPU µs: bare${CPU[b]}; this build${CPU[c]}; BASELINE${CPU[o]}"
fi

# ---- latency: what each hop adds, and Tollgate's own overhead metric over the same requests ----
overhead() { curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '/^tollgate_overhead_seconds_(sum|count) / {print $2}' | paste -sd' '; }
overhead_delta() { # BEFORE AFTER -> requests and mean µs
  read -r s0 n0 <<<"$1"; read -r s1 n1 <<<"$2"
  awk -v s0="$s0" -v n0="$n0" -v s1="$s1" -v n1="$n1" 'BEGIN {printf "%d %.1f", n1 - n0, (s1 - s0) / (n1 - n0) * 1e6}'
}
# The --span instance answers "COUNT SUM_NANOSECONDS"; as "SUM_SECONDS COUNT" like the metric.
span_as_metric() { awk '{printf "%.9f %d", $2 / 1e9, $1}' <<<"$1"; }
# One request at a time (wrk -c1): every microsecond a hop adds shows in the mean.
single() { # URL ENV... -> mean p50 p99 requests (µs)
  local url=$1; shift
  env "$@" $(pin 1) wrk -t1 -c1 -d"$LATENCY_DURATION" -s benches/wrk/chat.lua "$url" \
    | awk '/^RESULT/ {print $5, $3, $4, $8}'
}
thread_ticks() { # PID -> "TID TICKS" lines, sorted for join
  local t
  for t in /proc/"$1"/task/*; do
    awk -v t="${t##*/}" '{sub(/.*\) /, ""); print t, $12 + $13}' "$t/stat" 2>/dev/null
  done | sort
}
# The CPU ticks of the thread that took the most between two thread_ticks snapshots: in a
# one-connection run, the worker that served it; the rest is the process's background threads.
worker_ticks() { join "$1" "$2" | awk '$3 - $2 > max {max = $3 - $2} END {print max + 0}'; }
echo
settle
timed_url="http://127.0.0.1:$timed_port"
span() { curl -sf "$timed_url/bare-proxy/span"; }
read -r am a50 a99 _ < <(single "$direct" X=1)
# A single run's mean moves by 10 µs and more from one run to the next on this VM, and so does
# the difference of two runs; so (b) and (c) take turns for LATENCY_ROUNDS rounds and the medians
# of the rounds are reported. In each round: the mean and p50 wrk saw, the span the bare proxy
# timed or the metric Tollgate observed, and the gateway's CPU time per request: all its threads
# ("CPU") and the worker thread's alone ("wkr"; the rest is background work such as sled's).
echo "latency, one request at a time (wrk -c1, $LATENCY_DURATION each), $LATENCY_ROUNDS rounds of (b) and (c) in turn, µs [at ${SECONDS} s]:"
echo "   round | (b) mean   p50  span   CPU   wkr | (c) mean   p50 metric   CPU   wkr | (c)-(b) mean   p50 metric-span   CPU   wkr | steal"
declare -A LAT
for round in $(seq 1 "$LATENCY_ROUNDS"); do
  round_steal=$(steal_ticks); round_t0=$(date +%s.%N)
  span_before=$(span); b0=$(cpu_ticks "$timed"); thread_ticks "$timed" >"$dir/threads0"
  read -r bm b50 _ bn < <(single "$timed_url" X=1)
  b1=$(cpu_ticks "$timed"); thread_ticks "$timed" >"$dir/threads1"
  bw=$(cpu_per_request "$(worker_ticks "$dir/threads0" "$dir/threads1")" "$bn")
  read -r _ smean <<<"$(overhead_delta "$(span_as_metric "$span_before")" "$(span_as_metric "$(span)")")"
  before=$(overhead); c0=$(cpu_ticks "$gw"); thread_ticks "$gw" >"$dir/threads0"
  read -r cm c50 _ cn < <(single "$tg" "$keys")
  c1=$(cpu_ticks "$gw"); thread_ticks "$gw" >"$dir/threads1"
  cw=$(cpu_per_request "$(worker_ticks "$dir/threads0" "$dir/threads1")" "$cn")
  read -r _ omean <<<"$(overhead_delta "$before" "$(overhead)")"
  bcpu=$(cpu_per_request $((b1 - b0)) "$bn"); ccpu=$(cpu_per_request $((c1 - c0)) "$cn")
  row=$(awk -v bm="$bm" -v b5="$b50" -v s="$smean" -v bc="$bcpu" -v bw="$bw" -v cm="$cm" -v c5="$c50" -v o="$omean" -v cc="$ccpu" -v cw="$cw" \
    'BEGIN {printf "%.1f %.0f %.1f %.1f %.1f %.1f %.0f %.1f %.1f %.1f %.1f %.0f %.1f %.1f %.1f", bm, b5, s, bc, bw, cm, c5, o, cc, cw, cm - bm, c5 - b5, o - s, cc - bc, cw - bw}')
  read -r -a f <<<"$row"
  round_steal=$(steal_share "$round_steal" "$(steal_ticks)" "$round_t0" "$(date +%s.%N)")
  printf '  %6d | %8s %5s %5s %5s %5s | %8s %5s %6s %5s %5s | %12s %5s %11s %5s %5s | %s\n' "$round" "${f[@]}" "$round_steal"
  for i in "${!f[@]}"; do LAT[$i]+=" ${f[$i]}"; done
  # A round the VM's host took under 1 % of the CPU from: the ones whose figures can be compared.
  if awk -v s="${round_steal% %}" 'BEGIN {exit !(s < 1)}'; then
    quiet_rounds=$((${quiet_rounds:-0} + 1))
    for i in 10 11 12 13 14; do LAT[q$i]+=" ${f[$i]}"; done
  fi
done
medians=()
for i in $(seq 0 14); do medians+=("$(median "${LAT[$i]}")"); done
printf '  median | %8s %5s %5s %5s %5s | %8s %5s %6s %5s %5s | %12s %5s %11s %5s %5s\n' "${medians[@]}"
printf '  (a) direct, one run: mean %.0f µs, p50 %.0f µs, p99 %.0f µs\n' "$am" "$a50" "$a99"
awk -v a="$am" -v a5="$a50" -v b="${medians[0]}" -v b5="${medians[1]}" 'BEGIN {
  printf "  added by the proxy hop (b)-(a): mean %.0f µs, p50 %.0f µs\n", b - a, b5 - a5 }'
echo "  added by Tollgate beyond the hop (c)-(b), median of the rounds: mean ${medians[10]} µs, p50 ${medians[11]} µs; its CPU per request beyond (b)'s: ${medians[13]} µs, ${medians[14]} µs of it in the worker thread"
echo "  tollgate_overhead_seconds less the bare proxy's same span, median of the rounds: ${medians[12]} µs (the metric ${medians[7]} µs, the span ${medians[2]} µs)"
if [ "${quiet_rounds:-0}" -gt 0 ]; then
  echo "  the ${quiet_rounds} of $LATENCY_ROUNDS rounds with under 1 % steal, medians: (c)-(b) mean $(median "${LAT[q10]}") µs, p50 $(median "${LAT[q11]}") µs; the metric less the span $(median "${LAT[q12]}") µs; CPU per request beyond (b)'s $(median "${LAT[q13]}") µs, in the worker thread $(median "${LAT[q14]}") µs"
else
  echo "  no round had under 1 % steal: these differences are the VM's as much as the gateways'"
fi

# ---- fixed rate: the added p99 at RATE requests/s ----
# oha releases one request every 1/RATE s (its timer ticks each millisecond, so two at a time)
# over RATE_CONNECTIONS keep-alive connections, and with --latency-correction times each request
# from when it was due, so a stall is not hidden by requests that were never sent. A load
# generator whose workers each keep their own rate (hey -q) fires them in step: every 10 ms all
# 20 workers' requests arrive together, and its p99 is mostly the wait behind the others in that
# burst, growing with the number of workers even direct to the mock.
rate_run_one() { # URL AUTH-KEY-OR-EMPTY; prints: req/s p50_ms p99_ms mean_ms failed
  local auth=()
  [ -n "$2" ] && auth=(-H "Authorization: Bearer $2")
  $(pin 1) "$oha" --no-tui -z "$RATE_DURATION" -w -q "$RATE" --latency-correction -c "$RATE_CONNECTIONS" \
    -m POST -T application/json "${auth[@]}" --output-format json -o "$dir/oha.json" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}' "$1"
  # Read once the run is over: a Python starting up during it would take the gateway's core for
  # tens of milliseconds and show in (b)'s and (c)'s p99.
  python3 - "$dir/oha.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
summary, latency = report["summary"], report["latencyPercentiles"]
failed = sum(n for code, n in report["statusCodeDistribution"].items() if code != "200")
failed += sum(report.get("errorDistribution", {}).values())
print("%.0f %.3f %.3f %.3f %d" % (summary["requestsPerSec"], latency["p50"] * 1e3,
                                  latency["p99"] * 1e3, summary["average"] * 1e3, failed))
PY
}
# One fixed-rate p99 on this VM moves from one run to the next, even direct to the mock; so
# (a), (b) and (c) take turns for RATE_ROUNDS rounds, the order reversed every other round, and
# each added p99 reported is the median of the rounds' differences, each round's shown too. The
# bare proxy's row tells what the extra hop (a second process, the other core) adds by itself;
# the CPU time the VM's host took away meanwhile ("steal") tells how noisy the rounds were.
echo
settle
echo "fixed rate: $RATE requests/s for $RATE_DURATION (oha, evenly spaced, each request timed from when it was due; $RATE_CONNECTIONS connections), $RATE_ROUNDS rounds, (a), (b) and (c) in turn [at ${SECONDS} s]"
declare -A RRPS RP50 RP99 RMEAN ADDED
rate_run() { # KEY: one fixed-rate run of (a), (b) or (c); appends its figures under KEY
  local stats bad r p50 p99 mean
  case $1 in
    a) stats=$(rate_run_one "$direct/v1/chat/completions" "") ;;
    b) stats=$(rate_run_one "$bare_url/v1/chat/completions" "") ;;
    c) stats=$(rate_run_one "$tg/v1/chat/completions" "$(head -1 "$dir/keys.txt")") ;;
  esac
  bad=${stats##* }
  [ "$bad" = 0 ] || { echo "fixed-rate run ($1) had $bad failed or non-200 requests" >&2; exit 1; }
  read -r r p50 p99 mean _ <<<"$stats"
  RRPS[$1]+=" $r"; RP50[$1]+=" $p50"; RP99[$1]+=" $p99"; RMEAN[$1]+=" $mean"
}
last() { awk '{print $NF}' <<<"$1"; }
before=$(overhead)
steal0=$(steal_ticks); t0=$(date +%s.%N)
for round in $(seq 1 "$RATE_ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="a b c"; else order="c b a"; fi
  for k in $order; do rate_run "$k"; done
  for k in b c; do
    ADDED[$k]+=" $(awk -v a="$(last "${RP99[a]}")" -v x="$(last "${RP99[$k]}")" 'BEGIN {printf "%+.2f", x - a}')"
  done
done
steal1=$(steal_ticks); t1=$(date +%s.%N)
read -r on omean <<<"$(overhead_delta "$before" "$(overhead)")"
for k in a b c; do
  case $k in a) label='(a) direct:' ;; b) label='(b) bare proxy:' ;; c) label='(c) Tollgate:' ;; esac
  printf '  %-16s %6.0f req/s  p50 %5s ms  p99 %5s ms  mean %s ms   (medians; p99 per round:%s)\n' \
    "$label" "$(median "${RRPS[$k]}")" "$(median "${RP50[$k]}")" \
    "$(median "${RP99[$k]}")" "$(median "${RMEAN[$k]}")" "${RP99[$k]}"
done
echo "  added p99 over (a), median of the rounds: (c) Tollgate $(median "${ADDED[c]}") ms (per round:${ADDED[c]}); (b) bare proxy $(median "${ADDED[b]}") ms (per round:${ADDED[b]})"
echo "  CPU time the VM host took (steal) during these runs: $(steal_share "$steal0" "$steal1" "$t0" "$t1") of the cores"
echo "  tollgate_overhead_seconds over the (c) runs: $on requests, mean $omean µs"
echo
echo "Tollgate RSS with $KEYS keys in the store ($KEYS_USED of them in use): $started_rss MiB after start-up; peak $(rss_mib "$gw" VmHWM) MiB after (c), (e) and the latency runs (bare Pingora proxy: $(rss_mib "$bare" VmHWM) MiB)"

# ---- Idempotency-Key on every request: last, as its records keep sled busy afterwards ----
echo
echo "[at ${SECONDS} s]"
run d "$tg" "$gw" "$keys" BENCH_IDEMPOTENCY=1
row d "(d) Tollgate + Idempotency-Key"
echo "Tollgate peak RSS after (d): $(rss_mib "$gw" VmHWM) MiB (every request's response kept for 24 h)"

# ---- many SSE streams held open at once, through the bare proxy and through Tollgate ----
# Streams of 60 events a second apart stay open for the whole measurement. Each proxy's RSS is
# read with half of HOLD_STREAMS open and with all of them: the growth over the second half is
# what one more open stream costs, apart from whatever the process held before.
if [ "${SKIP_HOLD:-0}" != 1 ]; then
  tollgate_streams() { curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '/^tollgate_active_streams / {print $2}'; }
  # The bare proxy has no metric: its established client connections, from /proc/net/tcp.
  bare_streams() { awk -v port="$(printf ':%04X' "$bare_port")" '$2 ~ port"$" && $4 == "01"' /proc/net/tcp | wc -l; }
  wait_streams() { # COUNTER TARGET: until COUNTER reports TARGET (60 s at most)
    local n
    for _ in $(seq 1 120); do
      n=$($1); [ "${n:-0}" -ge "$2" ] && return 0
      sleep 0.5
    done
    echo "only ${n:-0} of $2 streams opened" >&2
    return 1
  }
  holders=()
  hold() { # URL COUNT ENV...: COUNT more streams, held by a wrk of their own
    local url=$1 count=$2
    shift 2
    env "$@" BENCH_STREAM=1 BENCH_CHUNKS=60 BENCH_DELAY_MS=1000 \
      $(pin 1) wrk -t1 -c"$count" -d60s --timeout 120s -s benches/wrk/chat.lua "$url" >/dev/null 2>&1 &
    holders+=($!)
    pids+=($!)
  }
  release() { # COUNTER: stops the holders, then waits until the proxy has closed (nearly) all
    # its streams, so that the mock never holds both proxies' streams at once. A few idle
    # upstream connections may stay in the bare proxy's pool.
    kill "${holders[@]}" 2>/dev/null || true
    wait "${holders[@]}" 2>/dev/null || true
    holders=()
    for _ in $(seq 1 60); do [ "$($1)" -le $((HOLD_STREAMS / 100)) ] && return 0; sleep 0.5; done
  }
  half=$((HOLD_STREAMS / 2))
  per_stream() { awk -v a="$1" -v b="$2" -v n="$((HOLD_STREAMS - half))" 'BEGIN {printf "%.1f", (b - a) * 1024 / n}'; }
  measure_hold() { # LABEL URL PID COUNTER ENV...
    local label=$1 url=$2 pid=$3 counter=$4 at_half at_full
    shift 4
    hold "$url" "$half" "$@"
    wait_streams "$counter" "$half"
    sleep 1 # let the memory of the last streams settle
    at_half=$(rss_mib "$pid" VmRSS)
    hold "$url" "$((HOLD_STREAMS - half))" "$@"
    wait_streams "$counter" "$HOLD_STREAMS"
    sleep 1
    at_full=$(rss_mib "$pid" VmRSS)
    printf '  %-24s %5d open: %7s MiB   %5d open: %7s MiB   each further stream: %5s KiB\n' \
      "$label" "$half" "$at_half" "$HOLD_STREAMS" "$at_full" "$(per_stream "$at_half" "$at_full")"
    release "$counter"
  }
  echo
  settle
  echo "SSE streams held open (RSS; descriptors allow at most about 10,000 streams per proxy here) [at ${SECONDS} s]:"
  measure_hold "(b) bare Pingora proxy" "$bare_url" "$bare" bare_streams X=1
  measure_hold "(c) Tollgate" "$tg" "$gw" tollgate_streams "$keys"
fi
echo "Tollgate peak RSS over the whole run: $(rss_mib "$gw" VmHWM) MiB"
awk -v t="$SECONDS" -v h="$settled_halves" 'BEGIN {printf "the whole run took %d s, %.1f s of it waiting for the gateways'"'"' cores to go quiet between runs\n", t, h / 2}'
