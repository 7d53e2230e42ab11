# Shared by the scripts: install what a fresh Debian machine lacks.
# Usage: ensure_cmd COMMAND DEBIAN_PACKAGE
ensure_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)" >&2
  if [ -z "${ENSURE_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    ENSURE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}

# Usage: ensure_pkg DEBIAN_PACKAGE (installed unless it is)
ensure_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed" && return 0
  echo "installing $1" >&2
  if [ -z "${ENSURE_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    ENSURE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}

# Rust 1.85 or newer, with rustfmt and clippy.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    ensure_cmd cargo cargo
  fi
  local v
  v=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | head -1)" != "1.85.0" ]; then
    echo "error: rustc $v is too old; slotpack needs 1.85 or newer (rustup)" >&2
    exit 1
  fi
}
