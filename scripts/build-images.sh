#!/usr/bin/env bash
# Build slotpack's images offline: static binaries (glibc, crt-static) copied
# into FROM scratch images: the pool image (slot-agent, test-tenant) and the
# orchestrator image (slotpack).
# Usage: scripts/build-images.sh [all|pool|orchestrator]   (default all)
# Tags: SLOTPACK_POOL_IMAGE (default slotpack/pool:latest) and
# SLOTPACK_ORCHESTRATOR_IMAGE (default slotpack/orchestrator:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
case "$which" in
  all | pool | orchestrator) ;;
  *) echo "usage: $0 [all|pool|orchestrator]" >&2; exit 2 ;;
esac

target=$(rustc -vV | sed -n 's/^host: //p')
pool_image=${SLOTPACK_POOL_IMAGE:-slotpack/pool:latest}
orchestrator_image=${SLOTPACK_ORCHESTRATOR_IMAGE:-slotpack/orchestrator:latest}

# Usage: image TAG DOCKERFILE CONTEXT BINARY...: copy the binaries into a
# fresh context, check that each is static, build TAG.
image() {
  local tag=$1 dockerfile=$2 ctx=$3 b
  shift 3
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$@" "$ctx/"
  for b in "$ctx"/*; do
    if readelf -l "$b" | grep -q INTERP; then echo "error: $b is not static" >&2; exit 1; fi
  done
  # The legacy builder needs no registry and no buildx plugin.
  DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" -f "$dockerfile" "$ctx" >/dev/null
  echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
}

if [ "$which" != orchestrator ]; then
  # Profile `agent`: release optimised for size (the agent's RSS).
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile agent --locked --target "$target" -p slot-agent -p test-tenant
  image "$pool_image" images/pool.Dockerfile target/images/pool \
    "target/$target/agent/slot-agent" "target/$target/agent/test-tenant"
fi

if [ "$which" != pool ]; then
  # Profile `release` (opt-level 3, as measured in the README). A second
  # build, after the pool image is there; it recompiles only when the
  # orchestrator changed (about 3 minutes on 2 CPUs then: fat LTO).
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" -p orchestrator --bin slotpack
  image "$orchestrator_image" images/orchestrator.Dockerfile target/images/orchestrator \
    "target/$target/release/slotpack"
fi
