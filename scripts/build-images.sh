#!/usr/bin/env bash
# Build slotpack's images offline: static binaries (glibc, crt-static) copied
# into FROM scratch images. Usage: scripts/build-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(rustc -vV | sed -n 's/^host: //p')
# Profile `agent`: release optimised for size (the agent's RSS).
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile agent --locked --target "$target" -p slot-agent -p test-tenant

ctx=target/images/pool
rm -rf "$ctx" && mkdir -p "$ctx"
cp "target/$target/agent/slot-agent" "target/$target/agent/test-tenant" "$ctx/"
for b in "$ctx"/*; do
  if readelf -l "$b" | grep -q INTERP; then echo "error: $b is not static" >&2; exit 1; fi
done
# The legacy builder needs no registry and no buildx plugin.
DOCKER_BUILDKIT=0 docker build --quiet -t "${SLOTPACK_POOL_IMAGE:-slotpack/pool:latest}" \
  -f images/pool.Dockerfile "$ctx"
echo "built ${SLOTPACK_POOL_IMAGE:-slotpack/pool:latest}"
