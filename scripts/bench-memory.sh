#!/usr/bin/env bash
# Memory of N tenants as N legacy containers versus pooled (cgroup memory of
# the containers plus their runtime shims), N = 10 and 50 by default.
# Results: stdout and bench-out/memory.json. Usage: scripts/bench-memory.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-images.sh >/dev/null
cargo build --release --locked -q -p orchestrator -p slot-agent
mkdir -p bench-out
python3 scripts/bench/memory.py target/release/slotpack "${SLOTPACK_POOL_IMAGE:-slotpack/pool:latest}" \
  bench-out/memory.json "$@"
