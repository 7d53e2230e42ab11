#!/usr/bin/env bash
# Build an offline runtime image with Debian bookworm, Python 3.11 and
# FreqTrade (PyPI) in /opt/freqtrade, from Debian's packages and PyPI only
# (mmdebstrap + `docker import`; no registry). Bytecode is compiled once with
# unchecked hashes: slot users cannot write the venv, and would otherwise
# recompile every import at every start. A base config (dry-run, API server
# on) is /etc/freqtrade/config.json, the user data of a one-bot container
# /freqtrade/user_data (its WORKDIR); each bot sets its port, address and
# credentials through FREQTRADE__* variables. pip in the chroot trusts the
# host's CA bundle (a proxy's CA, if the host has one), which is not
# kept, in a clean environment (REQUESTS_CA_BUNDLE would override it).
# Usage: scripts/build-freqtrade-image.sh [TAG]
#   TAG default slotpack-example/freqtrade:<version>; FREQTRADE_VERSION (default 2026.9)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
version=${FREQTRADE_VERSION:-2026.9}
tag=${1:-slotpack-example/freqtrade:$version}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag is there"
  exit 0
fi
ensure_cmd mmdebstrap mmdebstrap

work=$(mktemp -d /tmp/slotpack-ftimg.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp images/freqtrade/config.json "$work/config.json"
mmdebstrap --quiet --variant=apt --mode=root \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --customize-hook='chroot "$1" python3 -m venv /opt/freqtrade' \
  --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/host-ca.crt"' \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/etc/ssl/host-ca.crt /opt/freqtrade/bin/pip install --quiet --no-cache-dir freqtrade==$version" \
  --customize-hook='rm -f "$1/etc/ssl/host-ca.crt"' \
  --customize-hook='chroot "$1" /opt/freqtrade/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/freqtrade /usr/lib/python3.11 >/dev/null || true' \
  --customize-hook="mkdir -p \"\$1/etc/freqtrade\" && cp $work/config.json \"\$1/etc/freqtrade/config.json\" && chmod 644 \"\$1/etc/freqtrade/config.json\"" \
  --customize-hook='chroot "$1" env -i PATH=/usr/bin:/bin HOME=/root /opt/freqtrade/bin/freqtrade create-userdir --userdir /freqtrade/user_data >/dev/null' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/root/.cache' \
  bookworm "$work/rootfs.tar" http://deb.debian.org/debian

docker import \
  -c 'ENV PATH=/opt/freqtrade/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV VIRTUAL_ENV=/opt/freqtrade' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'WORKDIR /freqtrade' \
  -c 'CMD ["freqtrade", "webserver", "--config", "/etc/freqtrade/config.json"]' \
  -c 'LABEL managed-by=slotpack' \
  "$work/rootfs.tar" "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
