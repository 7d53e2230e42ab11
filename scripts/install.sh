#!/usr/bin/env bash
# Install slotpack's binaries: `slotpack`, `slot-agent` (the local backend
# runs it next to slotpack) and `test-tenant` (the README's example
# tenant), built in release mode, into $PREFIX/bin (default /usr/local as
# root, else ~/.local). SLOTPACK_PROFILE=debug installs the debug build
# instead (the README test, after the test build).
# Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
if [ "$(id -u)" = 0 ]; then prefix=${PREFIX:-/usr/local}; else prefix=${PREFIX:-$HOME/.local}; fi
profile=${SLOTPACK_PROFILE:-release}
case $profile in
  release) cargo build --release --locked -q -p orchestrator -p slot-agent -p test-tenant ;;
  debug) cargo build --locked -q -p orchestrator -p slot-agent -p test-tenant ;;
  *) echo "SLOTPACK_PROFILE: release or debug, not $profile" >&2; exit 2 ;;
esac
install -d "$prefix/bin"
for b in slotpack slot-agent test-tenant; do
  install -m 0755 "target/$profile/$b" "$prefix/bin/$b"
  echo "installed $prefix/bin/$b"
done
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on your PATH; add it: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
