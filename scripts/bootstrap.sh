# shellcheck shell=bash
# Sourced by scripts/sandbox and scripts/test: installs everything the controller needs, from
# the package registries only, so both commands work on a fresh Debian machine.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${WEBSTACK_TOOLS_DIR:-$REPO_DIR/.tools}"
export WEBSTACK_CACHE_DIR="${WEBSTACK_CACHE_DIR:-/var/cache/webstack}"

# Controller packages: the nspawn test bed, the servers the app's tests start themselves,
# promtool (in prometheus) for the alert rules' tests, and chromium for the dashboards'.
APT_PACKAGES=(
  systemd-container debootstrap iproute2 iptables openssh-client rsync
  python3-venv util-linux
  postgresql redis-server
  prometheus chromium
)

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run this as root (sudo $0): the test hosts need network namespaces, a bridge and mounts"
}

install_apt_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The Debian packages enable their own system-wide servers; the tests start private ones.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now postgresql redis-server prometheus >/dev/null 2>&1 || true
  fi
}

install_uv() {
  if ! command -v uv >/dev/null; then
    if [ ! -x "$TOOLS_DIR/bin/uv" ]; then
      say "installing uv into $TOOLS_DIR"
      python3 -m venv "$TOOLS_DIR"
      "$TOOLS_DIR/bin/pip" install --quiet uv
    fi
    export PATH="$TOOLS_DIR/bin:$PATH"
  fi
}

install_go_path() {
  # Go builds the OpenTelemetry Collector for the tests; it lives outside PATH on some machines.
  if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null || die "Go 1.25 or newer is needed to build the collector (tools/otelcol/build.sh): install it, or put it on PATH"
  local minor
  minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
  [ "${minor:-0}" -ge 25 ] || die "Go $(go env GOVERSION) is too old to build the collector: 1.25 or newer is needed"
}

build_otelcol() {
  # No collector release can be downloaded here: build a real one from the official
  # component modules (cached after the first build) and hand its archive to the role.
  say "otelcol-contrib archive (tools/otelcol/build.sh; built once, then cached)"
  local out
  out="$("$REPO_DIR/tools/otelcol/build.sh")"
  eval "$out"
  export OTELCOL_VERSION OTELCOL_ARCHIVE OTELCOL_ARCHIVE_URL OTELCOL_ARCHIVE_SHA256
}

build_pebble() {
  # The nginx scenario tests ACME certificates against Pebble, Let's Encrypt's test server;
  # no release can be downloaded here either, so build it from the Go module proxy (cached).
  say "Pebble ACME test server (tools/pebble/build.sh; built once, then cached)"
  local out
  out="$("$REPO_DIR/tools/pebble/build.sh")"
  eval "$out"
  export PEBBLE_VERSION PEBBLE_DIR
}

sync_python_deps() {
  say "uv sync (app, dev and deploy tooling from uv.lock)"
  # --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on some CI machines), nothing
  # would ever be cached, and every ansible-playbook, molecule and test process would compile
  # all it imports from source again. Files already compiled are skipped.
  (cd "$REPO_DIR" && uv sync --locked --quiet --compile-bytecode)
  export PATH="$REPO_DIR/.venv/bin:$PATH"
}

bootstrap() {
  require_root
  install_apt_packages
  install_uv
  install_go_path
  sync_python_deps
  build_otelcol
  build_pebble
  cd "$REPO_DIR"
}
