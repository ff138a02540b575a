#!/usr/bin/env bash
# Build otelcol-contrib from builder-config.yaml with the OpenTelemetry Collector Builder
# and pack it like the official release archive, so roles/otelcol can install it through
# otelcol_archive_url / otelcol_archive_sha256 exactly as it would install a release.
#
# Usage: tools/otelcol/build.sh
#
# stdout carries only KEY=VALUE lines (progress goes to stderr), so a harness can do
#   eval "$(tools/otelcol/build.sh)"
# and gets:
#   OTELCOL_VERSION          collector version (dist.version of the manifest)
#   OTELCOL_ARCHIVE          absolute path of otelcol-contrib_<version>_<os>_<arch>.tar.gz
#   OTELCOL_ARCHIVE_URL      the same as a file:// URL, ready for otelcol_archive_url
#   OTELCOL_ARCHIVE_SHA256   hex sha256 of the archive, ready for otelcol_archive_sha256
#   OTELCOL_CACHED           true when the archive came from the cache, false when built now
#
# Environment:
#   WEBSTACK_CACHE_DIR   cache root (default /var/cache/webstack); this script uses
#                        $WEBSTACK_CACHE_DIR/otelcol/ for the builder, Go's module and
#                        build caches (unless GOMODCACHE/GOCACHE are set) and the archives.
#   OTELCOL_BUILD_JOBS   parallel Go compile jobs (default 2: the build machines have 2 cores).
#   GO                   Go toolchain to use (default: go on PATH, else /usr/local/go/bin/go).
#
# The archive is keyed by the manifest's sha256: the same manifest is built once, and the
# cached archive is re-checked against its .sha256 file before it is handed out.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
manifest=$here/builder-config.yaml
cache=${WEBSTACK_CACHE_DIR:-/var/cache/webstack}/otelcol
jobs=${OTELCOL_BUILD_JOBS:-2}

log() { printf 'otelcol build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $go ]] || die "no Go toolchain (looked for go on PATH and /usr/local/go/bin/go; set GO=)"
command -v flock >/dev/null || die "flock (util-linux) is needed to serialise concurrent builds"

# dist.version is the only key indented by exactly two spaces named "version".
version=$(sed -n 's/^  version:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$manifest")
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read dist.version from $manifest"

# Builder and every v0.x component must be the same collector release: the builder's
# generated code and the components' APIs only match within one release.
mismatched=$(awk '$1 == "gomod:" || ($1 == "-" && $2 == "gomod:") { print $NF }' "$manifest" |
  grep '^v0\.' | grep -vxF "v$version" || true)
[[ -z $mismatched ]] || die "manifest has v0.x modules other than v$version: $mismatched"

goos=$("$go" env GOOS)
goarch=$("$go" env GOARCH)
[[ $goos == linux ]] || die "builds for linux only (go env GOOS says $goos)"
name=otelcol-contrib_${version}_${goos}_${goarch}.tar.gz
key=$(cat "$manifest" <(printf '%s/%s\n' "$goos" "$goarch") | sha256sum | cut -c1-16)
outdir=$cache/$key
archive=$outdir/$name

emit() {
  local sha
  sha=$(cut -d' ' -f1 "$archive.sha256")
  printf 'OTELCOL_VERSION=%s\nOTELCOL_ARCHIVE=%s\nOTELCOL_ARCHIVE_URL=file://%s\nOTELCOL_ARCHIVE_SHA256=%s\nOTELCOL_CACHED=%s\n' \
    "$version" "$archive" "$archive" "$sha" "$1"
}

cached_ok() {
  [[ -f $archive && -f $archive.sha256 ]] && (cd "$outdir" && sha256sum --quiet --status -c "$name.sha256")
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one build at a time per cache; a waiting run then finds the archive cached

if cached_ok; then
  log "cached: $archive (manifest key $key)"
  emit true
  exit 0
fi

started=$SECONDS
export GOMODCACHE=${GOMODCACHE:-$cache/go/mod}
export GOCACHE=${GOCACHE:-$cache/go/build}
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=$jobs"

builder=$cache/builder/v$version/builder
if [[ ! -x $builder ]]; then
  log "installing the OpenTelemetry Collector Builder v$version"
  tmpbin=$(mktemp -d "$cache/builder-bin.XXXXXX")
  GOBIN=$tmpbin "$go" install "go.opentelemetry.io/collector/cmd/builder@v$version" >&2
  mkdir -p "${builder%/*}"
  mv "$tmpbin/builder" "$builder"
  rmdir "$tmpbin"
fi

work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$manifest" "$work/builder-config.yaml"

log "building otelcol-contrib $version for $goos/$goarch (GOFLAGS=$GOFLAGS)"
(cd "$work" && "$builder" --config builder-config.yaml) >&2

binary=$work/_build/otelcol-contrib
"$binary" --version | grep -qF "$version" || die "built binary does not report version $version"

# Same layout as the official release archive: the otelcol-contrib binary at the root.
# Fixed owner, order and timestamps so the same binary always packs to the same bytes.
mkdir "$work/pkg"
install -m 0755 "$binary" "$work/pkg/otelcol-contrib"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" \
  -C "$work/pkg" -cf - otelcol-contrib | gzip -n -9 >"$work/$name"
(cd "$work" && sha256sum "$name" >"$name.sha256")

# Publish the archive before its .sha256: a checksum file present means a complete archive.
mkdir -p "$outdir"
mv "$work/$name" "$archive"
mv "$work/$name.sha256" "$archive.sha256"
log "built $archive in $((SECONDS - started)) s"
emit false
