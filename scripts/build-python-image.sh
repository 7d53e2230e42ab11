#!/usr/bin/env bash
# Build a runtime image that is not slotpack's: Debian bookworm with
# Python 3 and a small web app (images/python-app) in /app, made offline
# from Debian's packages by mmdebstrap and `docker import` (no registry).
# Its WORKDIR, USER, CMD and ENV are those of a typical legacy
# one-container-per-tenant image; the tests run it as a pool class and
# migrate legacy containers of it.
# Usage: scripts/build-python-image.sh [TAG]   (default slotpack-test/python:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
tag=${1:-slotpack-test/python:bookworm}
app_sum=$(sha256sum images/python-app/server.py scripts/build-python-image.sh | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "slotpack.source"}}' "$tag" 2>/dev/null)" = "$app_sum" ]; then
  echo "$tag is up to date"
  exit 0
fi
ensure_cmd mmdebstrap mmdebstrap

work=$(mktemp -d /tmp/slotpack-pyimg.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp images/python-app/server.py "$work/server.py"
# --variant=apt: essential packages and apt only; python3-minimal is the
# interpreter without the extras. Bytecode is compiled once, unchecked, so
# slot users (who cannot write /usr) never recompile it.
mmdebstrap --quiet --variant=apt --mode=root \
  --include=python3-minimal,python3.11 \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="mkdir -p \"\$1/app\" && cp $work/server.py \"\$1/app/server.py\" && chmod 755 \"\$1/app\" && chmod 644 \"\$1/app/server.py\"" \
  --customize-hook='chroot "$1" useradd --uid 1000 --home-dir /app --no-create-home app' \
  --customize-hook='chroot "$1" python3 -m compileall -q -f --invalidation-mode unchecked-hash /usr/lib/python3.11 /app || true' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs.tar" http://deb.debian.org/debian

docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'ENV RUNTIME_MARK=debian-python' \
  -c 'WORKDIR /app' \
  -c 'USER app' \
  -c 'CMD ["python3", "server.py"]' \
  -c 'LABEL managed-by=slotpack' \
  -c "LABEL slotpack.source=$app_sum" \
  "$work/rootfs.tar" "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
