#!/usr/bin/env bash
# Fetches the exporters users run today from Debian's own archive, without touching the
# machine's apt configuration: postgres_exporter 0.19.1 (prometheus-postgres-exporter) and
# pgbouncer_exporter 0.12.0 (prometheus-pgbouncer-exporter) from sid, which are static Go
# binaries that run on Debian 12 as they are. `apt-get download` runs with a temporary
# apt configuration (its own sources list naming sid, its own lists and cache directories),
# the packages are unpacked with `dpkg -x` under $CACHE/exporters/<package>_<version>/,
# and nothing is installed. Cached: a second run only prints the paths.
#
# Usage: bench/fetch-exporters.sh            prints NAME=PATH lines (eval-able)
#        PGEXP_VERSION=0.19.1 PGBEXP_VERSION=0.12.0 CACHE=~/.cache/pgvigil ...
set -euo pipefail

CACHE=${CACHE:-$HOME/.cache/pgvigil}
PGEXP_VERSION=${PGEXP_VERSION:-0.19.1}
PGBEXP_VERSION=${PGBEXP_VERSION:-0.12.0}
OUT=$CACHE/exporters
log() { echo "fetch-exporters: $*" >&2; }

# Version-matching unpacked package directory, or empty.
unpacked() { ls -d "$OUT/$1_$2"* 2>/dev/null | head -n1 || true; }

need=()
[ -n "$(unpacked prometheus-postgres-exporter "$PGEXP_VERSION")" ] || need+=("prometheus-postgres-exporter")
[ -n "$(unpacked prometheus-pgbouncer-exporter "$PGBEXP_VERSION")" ] || need+=("prometheus-pgbouncer-exporter")

if [ ${#need[@]} -gt 0 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/etc/preferences.d" "$OUT"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "$("$(dirname "${BASH_SOURCE[0]}")/../scripts/debian-mirror.sh")" >"$tmp/sources.list"
  cat >"$tmp/apt.conf" <<CONF
Dir::Etc::SourceList "$tmp/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::Etc::Preferences "/nonexistent";
Dir::Etc::PreferencesParts "$tmp/etc/preferences.d";
Dir::State::Lists "$tmp/lists";
Dir::Cache "$tmp";
Dir::Cache::Archives "$tmp/archives";
Acquire::Check-Valid-Until "false";
APT::Get::List-Cleanup "false";
CONF
  export APT_CONFIG=$tmp/apt.conf
  log "apt-get update (sid, temporary configuration)"
  # As root, apt drops to _apt for downloads, which cannot write the temporary directory.
  chmod 755 "$tmp"; chown -R _apt "$tmp/lists" "$tmp/archives" 2>/dev/null || true
  timeout 600 apt-get -qq update
  for pkg in "${need[@]}"; do
    log "apt-get download $pkg"
    (cd "$tmp" && timeout 600 apt-get -qq -o APT::Sandbox::User=root download "$pkg")
    deb=$(ls "$tmp/${pkg}"_*.deb)
    ver=$(dpkg-deb -f "$deb" Version); ver=${ver#*:}  # no epoch in the directory name
    dpkg -x "$deb" "$OUT/${pkg}_${ver}"
    log "$pkg $ver unpacked in $OUT/${pkg}_${ver}"
  done
fi

pgexp=$(unpacked prometheus-postgres-exporter "$PGEXP_VERSION")
pgbexp=$(unpacked prometheus-pgbouncer-exporter "$PGBEXP_VERSION")
for d in "$pgexp" "$pgbexp"; do
  [ -n "$d" ] || { log "sid no longer has the wanted version (PGEXP_VERSION=$PGEXP_VERSION, PGBEXP_VERSION=$PGBEXP_VERSION); see $OUT"; exit 1; }
done
echo "PGEXP_BIN=$pgexp/usr/bin/prometheus-postgres-exporter"
echo "PGBEXP_BIN=$pgbexp/usr/bin/prometheus-pgbouncer-exporter"
