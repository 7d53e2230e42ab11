#!/usr/bin/env bash
# Every check and test of slotpack: format, lints, docs, unit and end-to-end
# tests (the Docker ones too, which must run when CI=true).
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd unshare util-linux
ensure_cmd readelf binutils
# The swarm tests advertise the swarm on docker0 (`ip addr`).
ensure_cmd ip iproute2
# A real Prometheus server and promtool for the observability test, which
# runs the binary itself: Debian's package would start and enable
# prometheus.service (and recommends prometheus-node-exporter), so it is
# installed without recommends, starting no service and leaving none
# enabled (scripts/lib/ensure.sh).
ensure_cmd_no_services promtool prometheus
# docker-compose for the check of deploy/compose.yaml (it recommends docker.io).
ensure_cmd_no_services docker-compose docker-compose
# Headless Chromium for the browser test of tenant pages (issue I), and pip
# for the Python websockets server it installs into /var/lib/slotpack-tests.
ensure_cmd chromium chromium
python3 -m pip --version >/dev/null 2>&1 || ensure_pkg python3-pip

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

echo "== build"
cargo build --workspace --bins --locked
if docker info >/dev/null 2>&1; then
  bash scripts/build-images.sh
  # A runtime image that is not ours (Debian + Python), for the pool-class
  # and migration tests.
  bash scripts/build-python-image.sh
  # A second Docker engine, run in a container as a swarm worker, for the
  # node-loss tests of the swarm backend.
  bash scripts/build-node-image.sh
elif [ "${CI:-}" = "true" ]; then
  echo "error: CI=true but the Docker engine does not answer" >&2
  exit 1
else
  echo "warning: no Docker engine: the Docker tests will be skipped" >&2
fi

echo "== API fuzzing (schemathesis against /openapi.json)"
bash scripts/fuzz-api.sh

echo "== test"
cargo test --workspace --locked
