#!/usr/bin/env bash
# The dashboard's first load: `slotpack serve` on the local backend with
# 100 tenants (test-tenant, 10 pools of 10 slots), and /dashboard opened
# in headless Chromium (Debian's package) over and over. Each run counts
# from navigation start to the tenant table of all rows built, laid out and
# painted, as the page itself notes it (`document.body.dataset.loadedMs`);
# see scripts/bench/dashboard.py. Goal: at most 300 ms.
# Results: stdout and bench-out/dashboard.txt (and a screenshot beside it).
# Usage: scripts/bench-dashboard.sh [tenants] [runs]
#        BENCH_PROFILE=debug scripts/bench-dashboard.sh   (the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd chromium chromium
ensure_cmd curl curl
ensure_cmd python3 python3
tenants=${1:-100}
runs=${2:-15}
if [ "${BENCH_PROFILE:-release}" = debug ]; then
  cargo build --locked -q -p orchestrator -p slot-agent -p test-tenant
  bin=$PWD/target/debug
else
  cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant
  bin=$PWD/target/release
fi

work=$(mktemp -d /tmp/slotpack-bench-dashboard.XXXXXX)
chmod 755 "$work" # slot users must reach their homes below it
export SLOTPACK_ADMIN_TOKEN=bench-token SLOTPACK_LISTEN=127.0.0.1:18190 SLOTPACK_DATA_DIR=$work/data
export POOL_BASE_PORT=18400 MAX_BOTS_PER_CONTAINER=10 HEALTH_CHECK_INTERVAL=600000
export SLOTPACK_AGENT_BIN=$bin/slot-agent
api=http://$SLOTPACK_LISTEN
A="Authorization: Bearer $SLOTPACK_ADMIN_TOKEN"
"$bin/slotpack" serve 2>"$work/slotpack.log" &
orch=$!
cleanup() {
  kill -TERM "$orch" 2>/dev/null; wait "$orch" 2>/dev/null || true
  # The pools outlive the orchestrator by design; the bench ends them too.
  for f in "$work"/data/pools/*.pid; do [ -e "$f" ] && kill -TERM "$(cut -d' ' -f1 "$f")" 2>/dev/null; done
  sleep 1; rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "$api/healthz" >/dev/null && break; sleep 0.05; done

echo "creating $tenants tenants" >&2
for i in $(seq 1 "$tenants"); do
  curl -sf -H "$A" -X POST "$api/api/tenants" -d "{\"id\":\"bench-$i\",\"command\":\"$bin/test-tenant\",
    \"resources\":{\"memoryMb\":64,\"cpuMillis\":100},\"restart\":{\"startSecs\":0},
    \"ping\":{\"kind\":\"http\",\"path\":\"/api/v1/ping\",\"intervalMs\":10000}}" >/dev/null \
    || { echo "create bench-$i failed" >&2; tail -20 "$work/slotpack.log" >&2; exit 1; }
done
running=0
for _ in $(seq 600); do
  running=$(curl -sf -H "$A" "$api/api/tenants" | grep -o '"state":"running"' | wc -l)
  [ "$running" -ge "$tenants" ] && break
  sleep 0.1
done
[ "$running" -ge "$tenants" ] || { echo "only $running of $tenants tenants run" >&2; exit 1; }
echo "$tenants tenants running" >&2

mkdir -p bench-out
{
  echo "dashboard first load: $tenants tenants, $(nproc) CPUs, $(chromium --version 2>/dev/null | head -1), ${BENCH_PROFILE:-release} build"
  python3 scripts/bench/dashboard.py "$api" "$SLOTPACK_ADMIN_TOKEN" "$tenants" "$runs" bench-out/dashboard.png
} | tee bench-out/dashboard.txt
