#!/usr/bin/env bash
# Demo: a slot-agent on this host supervising three test tenants.
# Shows the API, a crash and its restart, then keeps running until Ctrl-C.
# Usage: bash scripts/demo.sh   (DEMO_EXIT=1 ends after the walk-through)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd curl curl
cargo build --release --locked -q -p slot-agent -p test-tenant

export SLOT_AGENT_TOKEN=${SLOT_AGENT_TOKEN:-demo-token}
api=127.0.0.1:8999
data=${SLOTPACK_DATA_DIR:-./slotpack-data}/demo-agent
tenant=$PWD/target/release/test-tenant
mkdir -p "$data"
target/release/slot-agent --listen "$api" --state-dir "$data" --base-port 9000 --slots 10 &
agent=$!
trap 'kill -TERM $agent 2>/dev/null; wait $agent 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do curl -sf "http://$api/v1/health" >/dev/null && break; sleep 0.05; done

call() { curl -sS -H "Authorization: Bearer $SLOT_AGENT_TOKEN" "$@"; echo; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

for i in 1 2 3; do
  say "PUT /v1/programs/bot-$i  (slot $i)"
  call -X PUT "http://$api/v1/programs/bot-$i" -d "{\"command\":\"$tenant\",\"slot\":$i,
    \"ping\":{\"kind\":\"http\",\"intervalMs\":1000},\"restart\":{\"startSecs\":1}}"
done
sleep 1.5
say "curl http://127.0.0.1:9002/api/v1/ping   (bot-2 on its slot port)"
curl -sS http://127.0.0.1:9002/api/v1/ping; echo
pid=$(curl -sS -H "Authorization: Bearer $SLOT_AGENT_TOKEN" "http://$api/v1/programs/bot-2" | sed 's/.*"pid":\([0-9]*\).*/\1/')
say "kill -9 $pid   (bot-2 crashes; the agent restarts it at once)"
kill -9 "$pid"; sleep 0.2
call "http://$api/v1/programs/bot-2"
say "GET /metrics (excerpt)"
curl -sS "http://$api/metrics" | grep -E '^slot_agent_program_(up|restarts_total)'

cat <<EOT

The agent runs on http://$api with token \$SLOT_AGENT_TOKEN=$SLOT_AGENT_TOKEN. Try:
  curl -H 'Authorization: Bearer $SLOT_AGENT_TOKEN' http://$api/v1/programs
  curl -H 'Authorization: Bearer $SLOT_AGENT_TOKEN' http://$api/v1/events
  curl -H 'Authorization: Bearer $SLOT_AGENT_TOKEN' 'http://$api/v1/programs/bot-1/logs?tail=20'
Ctrl-C stops the agent and its programs.
EOT
[ -n "${DEMO_EXIT:-}" ] && exit 0
wait $agent
