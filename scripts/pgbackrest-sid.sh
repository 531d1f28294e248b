#!/usr/bin/env bash
# pgBackRest from Debian sid (2.60 at the time of writing), runnable on this Debian 12 host.
#
# Why: Debian 12 ships pgBackRest 2.45; users run 2.60 today, and Debian's own archive has it
# in sid, built against a newer glibc than the host's. As scripts/pg-chroots.sh does for the
# PostgreSQL majors, a minbase debootstrap of sid (packages from Debian's archive only, through
# the mirror scripts/debian-mirror.sh prints) gets the package, once, outside the clone:
#   ${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}/pgbackrest-sid
# A chroot whose marker file (.pgvigil-complete, written last, holding `pgbackrest version`)
# exists is not touched again.
#
# pgBackRest must run on the host, not inside the chroot: it reads the host's data directory,
# socket and repository, and PostgreSQL runs it as user postgres from archive_command and
# restore_command. So it is run with the chroot's own dynamic loader and libraries:
#   ld-linux-x86-64.so.2 --library-path <sid libs> --argv0 <wrapper> <sid pgbackrest> ARGS
# The cache lives under root's 0700 home, so `--install DIR` copies what that needs (the
# binary, the libraries ldd resolves inside the chroot, the loader: ~15 MB) to DIR and writes
# the wrapper DIR/pgbackrest, which it prints. Set pgBackRest's `cmd=DIR/pgbackrest` so the
# processes it starts itself (async archive-push/-get, local workers) go through the wrapper.
#
#   scripts/pgbackrest-sid.sh                 build the chroot (idempotent), print its version
#   scripts/pgbackrest-sid.sh --install DIR   the same, then copy to DIR (redone only when the
#                                             version changed) and print DIR/pgbackrest
set -euo pipefail

CACHE="${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}"
ROOT="$CACHE/pgbackrest-sid"
MARKER=.pgvigil-complete
SUITE=sid

log() { echo "pgbackrest-sid: $*" >&2; }

install_dir=""
case "${1:-}" in
  "") ;;
  --install) install_dir=${2:?--install needs a directory}; [[ $install_dir == /* ]] || { log "--install needs an absolute path"; exit 2; } ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) log "unknown argument $1 (try --help)"; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { log "run as root (debootstrap, chroot)"; exit 1; }

mounted=""
cleanup() {
  if [ -n "$mounted" ]; then
    umount "$mounted" 2>/dev/null || umount -l "$mounted" 2>/dev/null || true
    mounted=""
  fi
}
trap cleanup EXIT INT TERM

if [ ! -f "$ROOT/$MARKER" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "apt-get install debootstrap"
    timeout 600 apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=300 \
      install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  MIRROR=$("$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh")
  start=$(date +%s)
  mkdir -p "$CACHE"
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    # A half-finished debootstrap leaves a tree it cannot resume: start over.
    log "debootstrap --variant=minbase $SUITE into $ROOT from $MIRROR (a few minutes, ~300 MB)"
    rm -rf --one-file-system "$ROOT"
    mkdir -p "$ROOT"
    timeout 1200 debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$CACHE/debootstrap-pgbackrest-sid.log" 2>&1 ||
      { log "debootstrap failed; see $CACHE/debootstrap-pgbackrest-sid.log"; exit 1; }
  fi
  echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99no-check-valid-until"
  # nothing starts inside the chroot, and postgresql-common (a dependency) creates no cluster
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod +x "$ROOT/usr/sbin/policy-rc.d"
  mkdir -p "$ROOT/etc/postgresql-common"
  echo 'create_main_cluster = false' >"$ROOT/etc/postgresql-common/createcluster.conf"
  if [ ! -x "$ROOT/usr/bin/pgbackrest" ]; then
    mount -t proc proc "$ROOT/proc"
    mounted="$ROOT/proc"
    log "apt-get update + install pgbackrest inside the chroot"
    timeout 600 chroot "$ROOT" apt-get update -qq
    timeout 1200 chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null
    chroot "$ROOT" apt-get clean
    cleanup
  fi
  [ -x "$ROOT/usr/bin/pgbackrest" ] || { log "pgbackrest missing in $ROOT after the install"; exit 1; }
  v=$(chroot "$ROOT" /usr/bin/pgbackrest version)
  pkg=$(chroot "$ROOT" dpkg-query -W -f='${Version}' pgbackrest)
  echo "$v (Debian $SUITE package $pkg)" >"$ROOT/$MARKER"
  log "ready: $(cat "$ROOT/$MARKER") in $(($(date +%s) - start))s"
fi

if [ -z "$install_dir" ]; then
  cat "$ROOT/$MARKER"
  exit 0
fi

# ---- copy to a directory user postgres can read, with the wrapper
if [ ! -f "$install_dir/VERSION" ] || ! cmp -s "$install_dir/VERSION" "$ROOT/$MARKER" || [ ! -x "$install_dir/pgbackrest" ]; then
  rm -rf "${install_dir:?}.new"
  mkdir -p "$install_dir.new/bin" "$install_dir.new/lib"
  cp "$ROOT/usr/bin/pgbackrest" "$install_dir.new/bin/pgbackrest"
  # the libraries as the chroot's loader resolves them ("name => /path (addr)" lines, and the loader)
  libs=$(chroot "$ROOT" ldd /usr/bin/pgbackrest | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
  [ -n "$libs" ] || { log "ldd inside the chroot listed nothing"; exit 1; }
  for l in $libs; do cp -L "$ROOT$l" "$install_dir.new/lib/${l##*/}"; done
  [ -f "$install_dir.new/lib/ld-linux-x86-64.so.2" ] || { log "the chroot's loader was not among ldd's lines"; exit 1; }
  cat >"$install_dir.new/pgbackrest" <<EOF
#!/bin/sh
# pgBackRest from Debian sid ($(cat "$ROOT/$MARKER")), with its own loader and libraries
# (written by scripts/pgbackrest-sid.sh). --argv0: the path pgBackRest knows itself by.
exec "$install_dir/lib/ld-linux-x86-64.so.2" --library-path "$install_dir/lib" --argv0 "$install_dir/pgbackrest" "$install_dir/bin/pgbackrest" "\$@"
EOF
  cp "$ROOT/$MARKER" "$install_dir.new/VERSION"
  chmod -R a+rX "$install_dir.new"
  chmod 0755 "$install_dir.new/pgbackrest"
  rm -rf "${install_dir:?}"
  mv "$install_dir.new" "$install_dir"
fi
# it must run on the host as it is
out=$("$install_dir/pgbackrest" version 2>&1) || { log "$install_dir/pgbackrest version failed: $out"; exit 1; }
log "$install_dir/pgbackrest: $out"
echo "$install_dir/pgbackrest"
