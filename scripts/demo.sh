#!/usr/bin/env bash
# Demo: `slotpack serve` on the embedded local backend with a few test
# tenants packed into pools, then keeps serving until Ctrl-C.
# Usage: bash scripts/demo.sh   (DEMO_EXIT=1 ends after the walk-through)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd curl curl
cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant

export SLOTPACK_ADMIN_TOKEN=${SLOTPACK_ADMIN_TOKEN:-demo-admin-token}
export SLOTPACK_LISTEN=${SLOTPACK_LISTEN:-127.0.0.1:8088}
export SLOTPACK_DATA_DIR=${SLOTPACK_DATA_DIR:-$PWD/slotpack-data/demo}
export MAX_BOTS_PER_CONTAINER=${MAX_BOTS_PER_CONTAINER:-4}
export HEALTH_CHECK_INTERVAL=${HEALTH_CHECK_INTERVAL:-5000}
api=http://$SLOTPACK_LISTEN
tenant=$PWD/target/release/test-tenant

target/release/slotpack serve &
orch=$!
stop() {
  kill -TERM "$orch" 2>/dev/null; wait "$orch" 2>/dev/null || true
  # The pools outlive the orchestrator by design; the demo ends them too.
  for f in "$SLOTPACK_DATA_DIR"/pools/*.pid; do
    [ -e "$f" ] && kill -TERM "$(cut -d' ' -f1 "$f")" 2>/dev/null || true
  done
}
trap stop EXIT INT TERM
for _ in $(seq 200); do curl -sf "$api/healthz" >/dev/null && break; sleep 0.05; done

A="Authorization: Bearer $SLOTPACK_ADMIN_TOKEN"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

for i in 1 2 3 4 5 6; do
  say "POST /api/tenants  bot-$i"
  curl -sS -H "$A" -X POST "$api/api/tenants" -d "{\"id\":\"bot-$i\",\"command\":\"$tenant\",
    \"resources\":{\"memoryMb\":128,\"cpuMillis\":100},
    \"ping\":{\"kind\":\"http\",\"path\":\"/api/v1/ping\",\"intervalMs\":2000}}" \
    | sed -E 's/.*"placement":(\{[^}]*\}).*/placement \1/'
done
sleep 1.5
say "slotpack status"
target/release/slotpack status
say "GET /api/tenants/bot-3/proxy/api/v1/ping   (through the orchestrator's proxy)"
curl -sS -H "$A" "$api/api/tenants/bot-3/proxy/api/v1/ping"; echo
say "GET /api/pool/bot/bot-5"
curl -sS -H "$A" "$api/api/pool/bot/bot-5"; echo
pid=$(pgrep -f "^$tenant" | head -1)
say "kill -9 $pid   (a tenant crashes; its agent restarts it at once)"
kill -9 "$pid"; sleep 0.3
say "POST /api/pool/health-check"
curl -sS -H "$A" -X POST "$api/api/pool/health-check" | head -c 600; echo

cat <<EOT

slotpack serves $api (admin token: $SLOTPACK_ADMIN_TOKEN). Try:
  curl -H '$A' $api/api/pool/status
  curl -H '$A' $api/api/tenants
  curl -H '$A' -X POST $api/api/tokens -d '{"owner":"alice"}'
  curl -H '$A' '$api/api/tenants/bot-1/logs?tail=20'
  curl $api/metrics
  curl $api/openapi.json
Ctrl-C stops the orchestrator and the demo's pools.
EOT
[ -n "${DEMO_EXIT:-}" ] && exit 0
wait "$orch"
