#!/usr/bin/env bash
# slot-agent against supervisord 4.3.0 (from PyPI, in a venv) on the same
# 10 and 100 `sleep` programs. Results: stdout and bench-out/agent.json.
# Usage: scripts/bench-agent.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile agent --locked -p slot-agent
venv=target/bench-venv
if [ ! -x "$venv/bin/supervisord" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet supervisor==4.3.0
fi
mkdir -p bench-out
python3 scripts/bench/agent_vs_supervisord.py target/agent/slot-agent "$venv/bin/supervisord" \
  bench-out/agent.json "$@"
# The slot sandbox (as root: cgroups, namespaces, Landlock, socket guard):
# 100 sandboxed starts, the agent's CPU and RSS at 100 pinged programs, a
# neighbour's p99 beside a spinning slot (sandbox on, and off as the peer).
cargo build --release --locked -p test-tenant
python3 scripts/bench/sandbox.py target/agent/slot-agent target/release/test-tenant \
  bench-out/sandbox.json
