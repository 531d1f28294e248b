#!/usr/bin/env bash
# Real PostgreSQL servers of the majors Debian 12 does not ship, for the tests.
#
# Why chroots: Debian 12 has only PostgreSQL 15; 17 (trixie) and 18 (sid) are in Debian's own
# archive but need a newer glibc than the host's, so they cannot be installed into the host.
# A minbase debootstrap of the suite that has them, with the server package inside, gives a
# real postmaster that the host's clients reach over 127.0.0.1 (see issue 15 and
# docs/testing.md). The chroots live outside the clone, under
#   ${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}/pg/<major>
# and are built once: a chroot whose marker file (written last) exists is skipped, so the
# script is idempotent and cheap on a warm machine.
#
#   scripts/pg-chroots.sh            every major below (17 18)
#   scripts/pg-chroots.sh 17         only the majors named
set -euo pipefail

CACHE="${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}"
declare -A SUITE=([17]=trixie [18]=sid)
MARKER=.pgvigil-complete

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(17 18)

log() { echo "pg-chroots: $*" >&2; }

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "not root and no sudo: run as root"; exit 1; }
  sudo_cmd=(sudo)
fi

todo=()
for major in "${majors[@]}"; do
  [ -n "${SUITE[$major]:-}" ] || { log "unknown major $major (known: ${!SUITE[*]})"; exit 2; }
  if [ -f "$CACHE/pg/$major/$MARKER" ]; then
    log "PostgreSQL $major: ready in $CACHE/pg/$major"
  else
    todo+=("$major")
  fi
done
[ ${#todo[@]} -gt 0 ] || exit 0

if ! command -v debootstrap >/dev/null 2>&1; then
  log "apt-get install debootstrap"
  timeout 600 "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 \
    install -y -qq --no-install-recommends debootstrap >/dev/null
fi

MIRROR=$("$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh")
mounted=""
cleanup() {
  if [ -n "$mounted" ]; then
    "${sudo_cmd[@]}" umount "$mounted" 2>/dev/null || "${sudo_cmd[@]}" umount -l "$mounted" 2>/dev/null || true
    mounted=""
  fi
}
trap cleanup EXIT INT TERM

for major in "${todo[@]}"; do
  suite="${SUITE[$major]}"
  root="$CACHE/pg/$major"
  start=$(date +%s)
  log "PostgreSQL $major: debootstrap $suite into $root from $MIRROR (a few minutes, ~500 MB)"
  "${sudo_cmd[@]}" mkdir -p "$root"
  if [ ! -x "$root/usr/bin/apt-get" ]; then
    # A half-finished debootstrap leaves a tree it cannot resume: start over.
    "${sudo_cmd[@]}" rm -rf --one-file-system "$root"
    "${sudo_cmd[@]}" mkdir -p "$root"
    timeout 1200 "${sudo_cmd[@]}" debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >"$CACHE/pg/debootstrap-$major.log" 2>&1 \
      || { log "debootstrap failed; see $CACHE/pg/debootstrap-$major.log"; exit 1; }
  fi
  if [ "$suite" = sid ]; then
    echo 'Acquire::Check-Valid-Until "false";' | "${sudo_cmd[@]}" tee "$root/etc/apt/apt.conf.d/99no-check-valid-until" >/dev/null
  fi
  # No service starts inside the chroot, and no default cluster is created by the package.
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$root/usr/sbin/policy-rc.d" >/dev/null
  "${sudo_cmd[@]}" chmod +x "$root/usr/sbin/policy-rc.d"
  "${sudo_cmd[@]}" mkdir -p "$root/etc/postgresql-common"
  echo 'create_main_cluster = false' | "${sudo_cmd[@]}" tee "$root/etc/postgresql-common/createcluster.conf" >/dev/null

  if [ ! -x "$root/usr/lib/postgresql/$major/bin/postgres" ]; then
    "${sudo_cmd[@]}" mount -t proc proc "$root/proc"
    mounted="$root/proc"
    log "PostgreSQL $major: apt-get update + install postgresql-$major inside the chroot"
    timeout 600 "${sudo_cmd[@]}" chroot "$root" apt-get update -qq
    # amcheck and pg_stat_statements are in the server package since PostgreSQL 10.
    timeout 1200 "${sudo_cmd[@]}" chroot "$root" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "postgresql-$major" >/dev/null
    "${sudo_cmd[@]}" chroot "$root" apt-get clean
    cleanup
  fi
  for b in initdb pg_ctl postgres pg_basebackup pg_verifybackup pg_amcheck psql; do
    [ -x "$root/usr/lib/postgresql/$major/bin/$b" ] || { log "PostgreSQL $major: $b missing in $root"; exit 1; }
  done
  "${sudo_cmd[@]}" chroot "$root" /usr/lib/postgresql/"$major"/bin/postgres --version \
    | "${sudo_cmd[@]}" tee "$root/$MARKER" >/dev/null
  log "PostgreSQL $major: ready ($(cat "$root/$MARKER")) in $(( $(date +%s) - start ))s"
done
