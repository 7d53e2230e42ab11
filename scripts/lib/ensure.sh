# Shared by the scripts: install what a fresh Debian machine lacks.

# apt-get update, once per script.
ensure_apt_updated() {
  if [ -z "${ENSURE_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    ENSURE_APT_UPDATED=1
  fi
}

# Usage: ensure_cmd COMMAND DEBIAN_PACKAGE
ensure_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)" >&2
  ensure_apt_updated
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}

# Usage: ensure_cmd_no_services COMMAND DEBIAN_PACKAGE: as ensure_cmd, for
# a package that would start or enable system services (Debian's
# `prometheus` starts and enables prometheus.service, and recommends
# prometheus-node-exporter; `docker-compose` recommends docker.io).
ensure_cmd_no_services() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1), without recommended packages, starting and enabling no service" >&2
  ensure_apt_updated
  apt_install_no_services "$2"
}

# Usage: apt_install_no_services DEBIAN_PACKAGE...: install without
# Recommends, under a /usr/sbin/policy-rc.d that refuses every start (exit
# 101, which invoke-rc.d and deb-systemd-invoke obey) for the install only,
# and disable again every service the newly installed packages enabled
# (systemd units through deb-systemd-helper, which notes them disabled so
# that upgrades keep them so; init scripts through update-rc.d). A
# policy-rc.d that was there before is put back as it was, also when the
# install fails or is interrupted.
apt_install_no_services() (
  set -euo pipefail
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ] || [ -L "$policy" ]; then
    saved=$(mktemp /usr/sbin/.policy-rc.d.saved.XXXXXX)
    cp -a "$policy" "$saved"
  fi
  restore() {
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore EXIT
  trap 'exit 130' INT TERM
  before=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" {print $2}' | sort)
  rm -f "$policy"
  printf '#!/bin/sh\n# slotpack scripts/lib/ensure.sh: no service starts during this install.\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
  after=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" {print $2}' | sort)
  for pkg in $(comm -13 <(echo "$before") <(echo "$after")); do
    for f in $(dpkg-query -L "$pkg"); do
      case "$f" in
        /lib/systemd/system/*.service | /lib/systemd/system/*.socket | /lib/systemd/system/*.timer | \
          /usr/lib/systemd/system/*.service | /usr/lib/systemd/system/*.socket | /usr/lib/systemd/system/*.timer)
          unit=${f##*/}
          case "$unit" in *@.*) continue ;; esac
          echo "disabling $unit (of $pkg)" >&2
          deb-systemd-helper disable "$unit" >/dev/null 2>&1 || true
          ;;
        /etc/init.d/?*)
          echo "disabling /etc/init.d/${f##*/} (of $pkg)" >&2
          update-rc.d "${f##*/}" disable >/dev/null 2>&1 || true
          ;;
      esac
    done
  done
)

# Usage: ensure_pkg DEBIAN_PACKAGE (installed unless it is)
ensure_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed" && return 0
  echo "installing $1" >&2
  ensure_apt_updated
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
