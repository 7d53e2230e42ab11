#!/usr/bin/env bash
# Tenant data on the docker backend, measured in one run (issue K):
#   1. a move of a tenant with 100 MiB in its home to another pool on the
#      same host (a PUT that changes its pool class), against a restart in
#      its own slot (a PUT that changes an env value): both until its new
#      run answers, its 100 MiB still there (no copy: the data is the
#      deployment's volume);
#   2. `slotpack migrate --execute` of a legacy bot whose user_data bind
#      mount holds 100 MiB, against one whose mount is empty.
# Needs the images (scripts/build-images.sh, scripts/build-python-image.sh).
# Results: stdout and bench-out/data.txt.
# Usage: scripts/bench-data.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
rounds=${1:-5}
cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant
docker image inspect slotpack-test/python:bookworm >/dev/null

work=$(mktemp -d /tmp/slotpack-bench-data.XXXXXX)
chmod 755 "$work"
export SLOTPACK_ADMIN_TOKEN=bench-token SLOTPACK_LISTEN=127.0.0.1:18480 SLOTPACK_DATA_DIR=$work/data
export SLOTPACK_BACKEND=docker SLOTPACK_DEPLOYMENT=bench-data POOL_BASE_PORT=18500
export MAX_BOTS_PER_CONTAINER=2 HEALTH_CHECK_INTERVAL=600000
target/release/slotpack serve 2>"$work/slotpack.log" &
orch=$!
cleanup() {
  kill -TERM "$orch" 2>/dev/null; wait "$orch" 2>/dev/null || true
  for id in $(docker ps -aq --filter label=slotpack.deployment=bench-data --filter label=managed-by=slotpack) \
            $(docker ps -aq --filter label=slotpack.bench-data=true); do
    docker rm -f -v "$id" >/dev/null 2>&1 || true
  done
  for v in $(docker volume ls -q --filter label=slotpack.deployment=bench-data); do
    docker volume rm -f "$v" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://$SLOTPACK_LISTEN/healthz" >/dev/null && break; sleep 0.05; done
mkdir -p bench-out
python3 scripts/bench/data.py "$rounds" "$work" target/release/slotpack | tee bench-out/data.txt
