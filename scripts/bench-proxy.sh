#!/usr/bin/env bash
# Proxy throughput: slotpack's /api/tenants/{id}/proxy/* (a bearer token
# checked on every request) against nginx and HAProxy (Debian packages)
# proxying the same tenant on loopback, all with upstream keep-alive and as
# many workers as cores, measured with wrk in one run: rounds alternate
# direct, nginx, haproxy and slotpack so that machine noise hits all alike;
# medians are reported, with p99 latencies.
# Results: stdout and bench-out/proxy.txt.
# Usage: scripts/bench-proxy.sh [seconds per run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd nginx nginx-light
ensure_cmd haproxy haproxy
ensure_cmd wrk wrk
ensure_cmd curl curl
secs=${1:-10}
conns=${2:-64}
rounds=${3:-5}
cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant

work=$(mktemp -d /tmp/slotpack-bench-proxy.XXXXXX)
chmod 755 "$work" # slot users must reach their homes below it
export SLOTPACK_ADMIN_TOKEN=bench-token SLOTPACK_LISTEN=127.0.0.1:18180 SLOTPACK_DATA_DIR=$work/data
export POOL_BASE_PORT=18300 MAX_BOTS_PER_CONTAINER=4 HEALTH_CHECK_INTERVAL=600000
target/release/slotpack serve 2>"$work/slotpack.log" &
orch=$!
nginx_pid=""
haproxy_pid=""
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  [ -n "$haproxy_pid" ] && kill "$haproxy_pid" 2>/dev/null
  kill -TERM "$orch" 2>/dev/null; wait "$orch" 2>/dev/null || true
  for f in "$work"/data/pools/*.pid; do [ -e "$f" ] && kill -TERM "$(cut -d' ' -f1 "$f")" 2>/dev/null; done
  sleep 1; rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://$SLOTPACK_LISTEN/healthz" >/dev/null && break; sleep 0.05; done
curl -sf -H "Authorization: Bearer $SLOTPACK_ADMIN_TOKEN" -X POST "http://$SLOTPACK_LISTEN/api/tenants" \
  -d "{\"id\":\"bench\",\"command\":\"$PWD/target/release/test-tenant\",\"restart\":{\"startSecs\":0}}" >/dev/null
port=$POOL_BASE_PORT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/api/v1/ping" >/dev/null && break; sleep 0.05; done

cat > "$work/nginx.conf" <<NGX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  upstream tenant { server 127.0.0.1:$port; keepalive 128; }
  server {
    listen 127.0.0.1:18181;
    location / {
      proxy_pass http://tenant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGX
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:18181/api/v1/ping" >/dev/null && break; sleep 0.05; done

cat > "$work/haproxy.cfg" <<HAP
global
  maxconn 4096
  nbthread $(nproc)
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend front
  bind 127.0.0.1:18182
  default_backend tenant
backend tenant
  server t 127.0.0.1:$port
HAP
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
haproxy_pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:18182/api/v1/ping" >/dev/null && break; sleep 0.05; done

run() { # name url [header]: one wrk run, appends req/s and p99 to $work/<name>.runs
  local name=$1 url=$2
  shift 2
  wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url" > "$work/$name.wrk"
  printf '%s %s\n' "$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")" \
    "$(awk '$1=="99%" {print $2}' "$work/$name.wrk")" >> "$work/$name.runs"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for r in $(seq "$rounds"); do
  run direct "http://127.0.0.1:$port/api/v1/ping"
  run nginx "http://127.0.0.1:18181/api/v1/ping"
  run haproxy "http://127.0.0.1:18182/api/v1/ping"
  run slotpack "http://$SLOTPACK_LISTEN/api/tenants/bench/proxy/api/v1/ping" -H "Authorization: Bearer $SLOTPACK_ADMIN_TOKEN"
done
mkdir -p bench-out
{
  echo "wrk -t2 -c$conns -d${secs}s x $rounds alternating rounds, GET /api/v1/ping of one test tenant, $(nproc) cores"
  for n in direct nginx haproxy slotpack; do
    printf '%-10s median %10.0f req/s   runs: %s   p99s: %s\n' "$n" \
      "$(cut -d' ' -f1 "$work/$n.runs" | median)" \
      "$(cut -d' ' -f1 "$work/$n.runs" | awk '{printf "%.0f ", $1}')" \
      "$(cut -d' ' -f2 "$work/$n.runs" | tr '\n' ' ')"
  done
  awk -v s="$(cut -d' ' -f1 "$work/slotpack.runs" | median)" \
    -v n="$(cut -d' ' -f1 "$work/nginx.runs" | median)" \
    -v h="$(cut -d' ' -f1 "$work/haproxy.runs" | median)" \
    'BEGIN { b = n > h ? n : h;
             printf "slotpack / nginx = %.2f, slotpack / haproxy = %.2f, slotpack / best = %.2f (medians)\n", s / n, s / h, s / b }'
} | tee bench-out/proxy.txt
