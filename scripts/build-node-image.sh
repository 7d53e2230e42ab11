#!/usr/bin/env bash
# Build a second Docker "node" for the multi-node swarm test: Debian
# bookworm with Debian's own docker.io (dockerd, containerd, runc) and
# iptables, made offline from Debian's packages by mmdebstrap and
# `docker import` (no registry). Run privileged, its dockerd joins the
# test's swarm as a worker.
# Usage: scripts/build-node-image.sh [TAG]   (default slotpack-test/node:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
tag=${1:-slotpack-test/node:bookworm}
src_sum=$(sha256sum scripts/build-node-image.sh | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "slotpack.source"}}' "$tag" 2>/dev/null)" = "$src_sum" ]; then
  echo "$tag is up to date"
  exit 0
fi
ensure_cmd mmdebstrap mmdebstrap

work=$(mktemp -d /tmp/slotpack-nodeimg.XXXXXX)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=apt --mode=root \
  --include=docker.io,iptables,ca-certificates,procps \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs.tar" http://deb.debian.org/debian

# vfs: no overlay on top of the outer engine's storage; the pool image is
# a few MB, so copying layers costs nothing.
docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["dockerd", "--host=unix:///var/run/docker.sock", "--storage-driver=vfs", "--iptables=true"]' \
  -c 'LABEL managed-by=slotpack' \
  -c "LABEL slotpack.source=$src_sum" \
  "$work/rootfs.tar" "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
