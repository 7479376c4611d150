#!/usr/bin/env bash
# Cache-hit throughput of GET /prompt/… for one cached image of IMAGE_BYTES (default 1 MiB):
# the mock upstream draws it once, then wrk asks for it again and again. Loopback only; the
# gateway runs on core 0 and wrk on core 1 when the machine has two cores or more.
#
#   benches/image_hits.sh            (or: make bench-images)
#
# Environment: IMAGE_BYTES, DURATION (wrk -d, default 10s), CONNECTIONS (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_BYTES=${IMAGE_BYTES:-1048576}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}

command -v wrk >/dev/null || { ${SUDO:-$([ "$(id -u)" = 0 ] || echo sudo)} apt-get install -y -qq wrk; }
cargo build --release --quiet --bin tollgate --example mock_upstream

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

dir=$(mktemp -d)
mock_port=$(free_port); port=$(free_port); admin_port=$(free_port); metrics_port=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# taskset execs the program, so $! below is the gateway's own pid (for its peak RSS).
pin() { if [ "$(nproc)" -ge 2 ]; then echo taskset -c "$1"; fi; }

target/release/examples/mock_upstream --listen "127.0.0.1:$mock_port" --image-bytes "$IMAGE_BYTES" >"$dir/mock.log" &
pids+=($!)
cat >"$dir/tollgate.yaml" <<EOF
server: { threads: 1, pid_file: $dir/tollgate.pid, upgrade_sock: $dir/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listen: [ { addr: "127.0.0.1:$port" } ]
admin: { listen: "127.0.0.1:$admin_port", token: bench-admin-token-0123456789 }
metrics: { listen: "127.0.0.1:$metrics_port" }
storage: { path: $dir/data }
upstreams:
  openai: { backends: ["http://127.0.0.1:$mock_port"], keys: [sk-bench] }
images: { upstream: openai, default_size: 1024x1024 }
limits: { requests_per_minute: 0 }
access_log: false
EOF
$(pin 0) target/release/tollgate serve -c "$dir/tollgate.yaml" >"$dir/gw.log" 2>&1 &
gw=$!
pids+=($gw)
wait_port "$mock_port" && wait_port "$port" || { cat "$dir/gw.log"; exit 1; }

export TOLLGATE_ADMIN_URL="http://127.0.0.1:$admin_port" TOLLGATE_ADMIN_TOKEN=bench-admin-token-0123456789
key=""
for _ in $(seq 1 100); do
  key=$(target/release/tollgate admin --json users add bench 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"]["key"])' 2>/dev/null) && break
  sleep 0.1
done
[ -n "$key" ] || { echo "could not create a key"; cat "$dir/gw.log"; exit 1; }

url="http://127.0.0.1:$port/prompt/a%20benchmark%20fox?key=$key"
size=$(curl -s -o /dev/null -w '%{size_download} %{http_code}' "$url")
echo "warm-up (miss): $size"
curl -s -o /dev/null -D - "$url" | grep -i '^x-cache'

$(pin 1) wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" | tee "$dir/wrk.txt"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
echo
echo "image bytes: $IMAGE_BYTES   connections: $CONNECTIONS   gateway threads: 1 (core 0)"
echo "gateway peak RSS: $((rss_kb / 1024)) MiB"
