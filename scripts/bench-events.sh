#!/usr/bin/env bash
# The event stream under load, measured in one run (issue L): a load of
# 1,000 events/s (owner-token creates: each is one `token.created` event,
# no agent call), with 0 and then 10 clients on `GET /api/events/stream`;
# each time the p50/p99 of `GET /api/tenants` (20 tenants) sampled
# alongside, the events each client got and their delivery delay.
# Local backend; no image needed. Results: stdout and bench-out/events.txt.
# Usage: scripts/bench-events.sh [seconds per phase, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd curl curl
secs=${1:-10}
cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant

work=$(mktemp -d /tmp/slotpack-bench-events.XXXXXX)
chmod 755 "$work"
export SLOTPACK_ADMIN_TOKEN=bench-token SLOTPACK_LISTEN=127.0.0.1:18680 SLOTPACK_DATA_DIR=$work/data
export SLOTPACK_DEPLOYMENT=bench-events POOL_BASE_PORT=18700 SLOT_UID_BASE=470000
export MAX_BOTS_PER_CONTAINER=10 HEALTH_CHECK_INTERVAL=600000 SLOTPACK_MAX_STREAMS_PER_CLIENT=20
target/release/slotpack serve 2>"$work/slotpack.log" &
orch=$!
cleanup() {
  kill -TERM "$orch" 2>/dev/null; wait "$orch" 2>/dev/null || true
  SLOTPACK_DATA_DIR=$work/data target/release/slotpack agents stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://$SLOTPACK_LISTEN/healthz" >/dev/null && break; sleep 0.05; done
mkdir -p bench-out
python3 scripts/bench/events.py "$secs" "$PWD/target/release/test-tenant" | tee bench-out/events.txt
