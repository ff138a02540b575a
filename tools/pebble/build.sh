#!/usr/bin/env bash
# Build Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv (its DNS test
# server) from the Go module proxy, for the ACME checks of the nginx scenario. No Pebble
# release can be downloaded on these machines; the module is pinned by version and by the
# module's h1: hash (the one go.sum and the checksum database record), checked before build.
#
# Usage: tools/pebble/build.sh
#
# stdout carries only KEY=VALUE lines (progress goes to stderr), so a harness can do
#   eval "$(tools/pebble/build.sh)"
# and gets:
#   PEBBLE_VERSION   the module version built
#   PEBBLE_DIR       absolute path of a directory holding
#                      pebble, pebble-challtestsrv     static linux binaries
#                      certs/localhost/{cert,key}.pem  Pebble's own HTTPS certificate
#                                                      (names: localhost, pebble, 127.0.0.1)
#                      certs/pebble.minica.pem         the CA that signed it (ACME clients
#                                                      must trust it to talk to Pebble)
#   PEBBLE_CACHED    true when the directory came from the cache, false when built now
#
# Environment:
#   WEBSTACK_CACHE_DIR   cache root (default /var/cache/webstack); this script uses
#                        $WEBSTACK_CACHE_DIR/pebble/ for Go's module and build caches
#                        (unless GOMODCACHE/GOCACHE are set) and the build.
#   PEBBLE_VERSION, PEBBLE_MODULE_SUM   another pinned release (both together).
#   GO                   Go toolchain to use (default: go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

module=github.com/letsencrypt/pebble/v2
version=${PEBBLE_VERSION:-v2.10.3}
# h1: hash of the module zip of that version (go mod download -json ... | Sum).
module_sum=${PEBBLE_MODULE_SUM:-h1:Zg/Rq9T8FvNMvfLvi3k+dXmrwgDnG9neRpeaJY2hwVM=}
cache=${WEBSTACK_CACHE_DIR:-/var/cache/webstack}/pebble

log() { printf 'pebble build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $go ]] || die "no Go toolchain (looked for go on PATH and /usr/local/go/bin/go; set GO=)"
command -v flock >/dev/null || die "flock (util-linux) is needed to serialise concurrent builds"
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "PEBBLE_VERSION must look like v2.10.3, not $version"

goarch=$("$go" env GOARCH)
key=$(printf '%s@%s %s linux/%s\n' "$module" "$version" "$module_sum" "$goarch" | sha256sum | cut -c1-16)
outdir=$cache/$key

emit() {
  printf 'PEBBLE_VERSION=%s\nPEBBLE_DIR=%s\nPEBBLE_CACHED=%s\n' "$version" "$outdir" "$1"
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one build at a time per cache; a waiting run then finds the build cached

# A finished build has its BUILT file, written last.
if [[ -f $outdir/BUILT ]]; then
  log "cached: $outdir"
  emit true
  exit 0
fi

started=$SECONDS
export GOMODCACHE=${GOMODCACHE:-$cache/go/mod}
export GOCACHE=${GOCACHE:-$cache/go/build}
export CGO_ENABLED=0   # static binaries: they run on any test host whatever its libc

log "downloading $module@$version"
info=$("$go" mod download -json "$module@$version")
sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
[[ $sum == "$module_sum" ]] || die "$module@$version has hash $sum, pinned is $module_sum"
[[ -d $src ]] || die "go mod download did not report the module's directory"

work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building pebble and pebble-challtestsrv $version"
GOBIN=$work "$go" install -trimpath "$module/cmd/pebble@$version" "$module/cmd/pebble-challtestsrv@$version" >&2
"$work/pebble" -version >&2 || die "the built pebble does not run"

mkdir -p "$work/out/certs/localhost"
install -m 0755 "$work/pebble" "$work/pebble-challtestsrv" "$work/out/"
install -m 0644 "$src/test/certs/pebble.minica.pem" "$work/out/certs/"
install -m 0644 "$src/test/certs/localhost/cert.pem" "$src/test/certs/localhost/key.pem" \
  "$work/out/certs/localhost/"
printf '%s@%s %s\n' "$module" "$version" "$module_sum" >"$work/out/BUILT"

rm -rf "$outdir"
mv "$work/out" "$outdir"
log "built $outdir in $((SECONDS - started)) s"
emit false
