#!/usr/bin/env bash
# Incremental backups on PostgreSQL 17 (MAJOR=18: on 18): pgvigil (`backup --incremental`: pg_basebackup
# --incremental with summarize_wal, restored through pg_combinebackup) against pgBackRest 2.60
# (`--type=incr` with block incremental, repo1-block=y + repo1-bundle=y), same cluster, same run.
#
# The cluster is the reference one of scrape.sh (pgbench -s $SCALE + $NTABLES small tables,
# ~1.1 GB, ~25,600 files), on PostgreSQL $MAJOR from the chroot of scripts/pg-chroots.sh. Both
# tools run inside that chroot as its postgres user (pgvigil: a copy of the release binary;
# pgBackRest 2.60: scripts/pgbackrest-sid.sh's loader wrapper, copied there), and both archive
# every segment (archive_command runs both). What is measured:
#   1. a full backup by each tool (time, bytes stored);
#   2. $INCREMENTS rounds: ~1% of the data changed (UPDATE of the next 1% of
#      pgbench_accounts' rows, a contiguous range, so ~1% of its pages), then an incremental
#      by each tool (turns alternating): time and bytes stored, each vs that tool's full;
#   3. a restore of the newest backup (full + $INCREMENTS incrementals) by each tool into a
#      fresh directory, then PostgreSQL started on it: time of the restore command, time
#      until promoted (recovery to the end of the backup, `immediate`), and the restored
#      pgbench_accounts checked against the source (count and sum of abalance).
# Prints one table with the ratios (incremental / full, pgvigil / pgBackRest).
#
# Bounded (BENCH_TIMEOUT, every step its own timeout), loopback only (127.0.0.1:$INCR_PORT
# and :$RESTORE_PORT). On exit it stops the clusters it started, by their postmaster.pid.
# Everything lives under the chroot's /tmp/pgvigil-incr-bench (removed at the start of the
# next run; KEEP=0 removes it at the end).
#
# Usage (as root):  bench/incremental.sh          SCALE=10 NTABLES=300 bench/incremental.sh (small)
set -euo pipefail

case ${1:-} in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

if [ -z "${PGVIGIL_INCR_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_INCR_BENCH_WATCHDOG=1
  exec timeout -k 30 "${BENCH_TIMEOUT:-3600}" bash "$0"
fi
[ "$(id -u)" = 0 ] || { echo "run as root (chroot)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CACHE=${PGVIGIL_CACHE:-$HOME/.cache/pgvigil}
MAJOR=${MAJOR:-17}
CH=$CACHE/pg/$MAJOR                  # PostgreSQL $MAJOR's chroot
W=/tmp/pgvigil-incr-bench            # the work directory as seen inside the chroot
HW=$CH$W                             # ... and from the host
PG=/usr/lib/postgresql/$MAJOR/bin     # inside the chroot
INCR_PORT=${INCR_PORT:-55417}
RESTORE_PORT=${RESTORE_PORT:-55418}
INCREMENTS=${INCREMENTS:-6}
PROCESS_MAX=${PROCESS_MAX:-$(nproc)}
KEEP=${KEEP:-1}
HOST_PSQL=/usr/lib/postgresql/15/bin/psql
HOST_PGBENCH=/usr/lib/postgresql/15/bin/pgbench

[ -f "$CH/.pgvigil-complete" ] || timeout 2400 "$REPO_ROOT/scripts/pg-chroots.sh" "$MAJOR"
PGUID=$(awk -F: '$1 == "postgres" {print $3 ":" $4}' "$CH/etc/passwd")
[ -n "$PGUID" ] || die "no postgres user in $CH/etc/passwd"

# as the chroot's postgres, inside the chroot, bounded
inch() { timeout "${STEP_TIMEOUT:-1200}" chroot --userspec="$PGUID" "$CH" env -i HOME=$W PATH=$PG:/usr/bin:/bin LANG=C.UTF-8 "$@"; }
psql_at() { local port=$1; shift; timeout 600 "$HOST_PSQL" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@"; }
pgv() { inch $W/pgvigil "$@" -c $W/pgvigil.toml; }
pgbr() { inch $W/pgbr/pgbackrest --config=$W/pgbackrest.conf --stanza=bench "$@"; }

stop_dir() { # stop the cluster of a data directory (chroot path) if its postmaster runs
  local pid
  [ -f "$HW/$1/postmaster.pid" ] || return 0
  pid=$(head -n1 "$HW/$1/postmaster.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  inch $PG/pg_ctl -D "$W/$1" -m fast -w -t 60 stop >/dev/null 2>&1 || { kill -TERM "$pid" 2>/dev/null || true; }
}
PROC_MOUNTED=""
cleanup() {
  stop_dir r-pgvigil; stop_dir r-pgbr; stop_dir data
  [ -z "$PROC_MOUNTED" ] || umount "$CH/proc" 2>/dev/null || umount -l "$CH/proc" 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf --one-file-system "${HW:?}"
}
trap cleanup EXIT

# ---- tools
# pgvigil finds itself through /proc/self/exe (restore_command names the binary)
if ! mountpoint -q "$CH/proc"; then mount -t proc proc "$CH/proc" && PROC_MOUNTED=1; fi
build_pgvigil "$LOGDIR/cargo-build-incremental.log" || die "${PGVIGIL_NOTE:-build failed}"
stop_dir r-pgvigil; stop_dir r-pgbr; stop_dir data
rm -rf --one-file-system "${HW:?}"
mkdir -p "$HW" "$LOGDIR"
install -m 0755 "$PGVIGIL_BIN" "$HW/pgvigil"
PGBR_HOST=$(timeout 2400 "$REPO_ROOT/scripts/pgbackrest-sid.sh" --install "$HW/pgbr-host" 2>"$LOGDIR/pgbackrest-sid.log" | tail -n1) ||
  die "scripts/pgbackrest-sid.sh failed, see $LOGDIR/pgbackrest-sid.log"
# the same files under the path the chroot sees
cp -a "$HW/pgbr-host" "$HW/pgbr"
sed -i "s#$HW/pgbr-host#$W/pgbr#g" "$HW/pgbr/pgbackrest"
mkdir -p "$HW"/{pgvigil-repo,pgbr-repo,pgbr-log,pgbr-lock,pgbr-spool}
chown -R "$PGUID" "$HW"
PGBR_VERSION=$(inch $W/pgbr/pgbackrest version) || die "pgBackRest in the chroot: $PGBR_VERSION"
log "pgvigil $(inch $W/pgvigil --version), $PGBR_VERSION (host copy $PGBR_HOST)"

# ---- the cluster
inch $PG/initdb -D $W/data -U postgres --auth=trust -E UTF8 >"$LOGDIR/incr-initdb.log" 2>&1 || die "initdb, see $LOGDIR/incr-initdb.log"
cat >"$HW/pgvigil.toml" <<EOF
# written by bench/incremental.sh
[server]
listen = "127.0.0.1:59436"
[postgres]
dsn = "postgresql://postgres@127.0.0.1:$INCR_PORT/postgres?sslmode=disable"
[storage]
url = "file://$W/pgvigil-repo"
EOF
cat >"$HW/pgbackrest.conf" <<EOF
[global]
repo1-type=posix
repo1-path=$W/pgbr-repo
repo1-retention-full=2
repo1-bundle=y
repo1-block=y
compress-type=zst
start-fast=y
process-max=$PROCESS_MAX
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
spool-path=$W/pgbr-spool
log-level-console=warn
log-level-file=info
cmd=$W/pgbr/pgbackrest

[bench]
pg1-path=$W/data
pg1-port=$INCR_PORT
pg1-socket-path=$W
pg1-user=postgres
EOF
cat >>"$HW/data/postgresql.auto.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $INCR_PORT
unix_socket_directories = '$W'
dynamic_shared_memory_type = sysv
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_level = replica
summarize_wal = on
archive_mode = on
archive_command = '$W/pgvigil wal-push %p -c $W/pgvigil.toml && $W/pgbr/pgbackrest --config=$W/pgbackrest.conf --stanza=bench archive-push %p'
EOF
chown -R "$PGUID" "$HW"
inch $PG/pg_ctl -D $W/data -l $W/pg.log -w -t 120 start >/dev/null || die "PostgreSQL $MAJOR did not start, see $HW/pg.log"
SCALE=${SCALE:-50} NTABLES=${NTABLES:-3000}
log "loading: pgbench -i -s $SCALE and $NTABLES small tables"
timeout 1800 "$HOST_PGBENCH" -h 127.0.0.1 -p "$INCR_PORT" -U postgres -i -q -s "$SCALE" postgres >"$LOGDIR/incr-pgbench.log" 2>&1 ||
  die "pgbench -i, see $LOGDIR/incr-pgbench.log"
for ((b = 1; b <= NTABLES; b += 250)); do
  e=$((b + 249)); ((e > NTABLES)) && e=$NTABLES
  small_tables_sql "$b" "$e" | psql_at "$INCR_PORT" -d postgres >/dev/null
done
psql_at "$INCR_PORT" -d postgres -c "VACUUM ANALYZE" -c CHECKPOINT
DB_BYTES=$(psql_at "$INCR_PORT" -d postgres -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
FILES=$(find "$HW/data/base" -type f | wc -l)
pgbr stanza-create >/dev/null || die "pgbackrest stanza-create"
log "cluster: $((DB_BYTES / 1048576)) MiB in databases, $FILES files under base/"

RESULTS=$HW/results.tsv
: >"$RESULTS"
# one_backup TOOL KIND : runs it, appends "tool kind seconds bytes" to RESULTS
one_backup() {
  local tool=$1 kind=$2 t0 ms out bytes
  t0=$(ms_now)
  case $tool/$kind in
    pgvigil/full) out=$(pgv backup --json) ;;
    pgvigil/incr) out=$(pgv backup --incremental --json) ;;
    pgbr/full) pgbr --type=full backup >/dev/null ;;
    pgbr/incr) pgbr --type=incr backup >/dev/null ;;
  esac
  ms=$(ms_since "$t0")
  if [ "$tool" = pgvigil ]; then
    bytes=$(python3 -c 'import json,sys; b=json.loads(sys.argv[1]); assert b["kind"]==sys.argv[2], b["kind"]; print(b["stored_bytes"])' \
      "$out" "$([ "$kind" = full ] && echo full || echo incremental)") || die "pgvigil backup ($kind) output: $out"
  else
    bytes=$(pgbr info --output=json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"][-1]; assert b["type"]==sys.argv[1], b["type"]; print(b["info"]["repository"]["delta"])' "$kind") ||
      die "pgbackrest info after the $kind backup"
  fi
  printf '%s\t%s\t%s\t%s\n' "$tool" "$kind" "$(ms2s "$ms")" "$bytes" >>"$RESULTS"
  log "$tool $kind backup: $(ms2s "$ms") s, $((bytes / 1024)) KiB stored"
}
ms_now() { echo $((${EPOCHREALTIME/./} / 1000)); }
ms_since() { echo $(($(ms_now) - $1)); }
ms2s() { awk -v m="$1" 'BEGIN { printf "%.2f", m / 1000 }'; }

one_backup pgvigil full
one_backup pgbr full
ROWS=$((SCALE * 100000)); STEP=$((ROWS / 100))
for ((i = 1; i <= INCREMENTS; i++)); do
  psql_at "$INCR_PORT" -d postgres -c "UPDATE pgbench_accounts SET abalance = abalance + $i WHERE aid > $(((i - 1) * STEP)) AND aid <= $((i * STEP))" >/dev/null
  if ((i % 2)); then one_backup pgvigil incr; one_backup pgbr incr; else one_backup pgbr incr; one_backup pgvigil incr; fi
done
SRC=$(psql_at "$INCR_PORT" -d postgres -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")

# ---- restore full + INCREMENTS: the command, then start until promoted
# restored TOOL : starts the restored directory, waits until promoted, checks the data
restored() {
  local dir=r-$1 t0 ms i got
  cat >>"$HW/$dir/postgresql.auto.conf" <<EOF
port = $RESTORE_PORT
archive_mode = off
EOF
  t0=$(ms_now)
  inch $PG/pg_ctl -D $W/$dir -l $W/$dir.log -t 600 start >/dev/null || die "$dir did not start, see $HW/$dir.log"
  for ((i = 0; i < 6000; i++)); do
    [ "$(psql_at "$RESTORE_PORT" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 0.1
  done
  ms=$(ms_since "$t0")
  got=$(psql_at "$RESTORE_PORT" -d postgres -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")
  [ "$got" = "$SRC" ] || die "$1's restore has pgbench_accounts $got, the source $SRC"
  stop_dir "$dir"
  echo "$(ms2s "$ms")"
}
log "restoring full + $INCREMENTS incrementals"
t0=$(ms_now); pgv restore --to $W/r-pgvigil --backup latest --target immediate >"$LOGDIR/incr-restore-pgvigil.log" 2>&1 ||
  die "pgvigil restore, see $LOGDIR/incr-restore-pgvigil.log"
PGV_RESTORE=$(ms2s "$(ms_since "$t0")")
PGV_START=$(restored pgvigil)
rm -rf --one-file-system "${HW:?}/r-pgvigil"
t0=$(ms_now); pgbr restore --pg1-path=$W/r-pgbr --type=immediate --target-action=promote --archive-mode=off >"$LOGDIR/incr-restore-pgbr.log" 2>&1 ||
  die "pgbackrest restore, see $LOGDIR/incr-restore-pgbr.log"
PGBR_RESTORE=$(ms2s "$(ms_since "$t0")")
PGBR_START=$(restored pgbr)
rm -rf --one-file-system "${HW:?}/r-pgbr"

# ---- the table
python3 - "$RESULTS" "$PGV_RESTORE" "$PGV_START" "$PGBR_RESTORE" "$PGBR_START" "$PGBR_VERSION" "$DB_BYTES" "$FILES" "$INCREMENTS" "$MAJOR" <<'EOF'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
pgv_r, pgv_s, br_r, br_s, brv, db, files, n, major = sys.argv[2:11]
def pick(tool, kind):
    return [(float(r[2]), int(r[3])) for r in rows if r[0] == tool and r[1] == kind]
print(f"\nPostgreSQL {major}, {int(db) / 2**20:.0f} MiB in databases, {files} files; ~1% of pgbench_accounts changed before each of {n} incrementals")
print(f"pgvigil (pg_basebackup --incremental, summarize_wal) vs {brv} (--type=incr, repo1-block=y)\n")
print(f"{'':28}{'pgvigil':>14}{'pgBackRest':>14}{'ratio':>8}")
def line(label, a, b, unit, fmt):
    r = a / b if b else float('nan')
    print(f"{label:28}{fmt(a) + unit:>14}{fmt(b) + unit:>14}{r:>8.2f}")
mib = lambda v: f"{v / 2**20:.1f}"
sec = lambda v: f"{v:.2f}"
pf, bf = pick("pgvigil", "full")[0], pick("pgbr", "full")[0]
pi, bi = pick("pgvigil", "incr"), pick("pgbr", "incr")
line("full: time", pf[0], bf[0], " s", sec)
line("full: stored", pf[1], bf[1], " MiB", mib)
avg = lambda xs: sum(xs) / len(xs)
line("incremental: time (mean)", avg([x[0] for x in pi]), avg([x[0] for x in bi]), " s", sec)
line("incremental: stored (mean)", avg([x[1] for x in pi]), avg([x[1] for x in bi]), " MiB", mib)
print(f"{'incremental / full: time':28}{avg([x[0] for x in pi]) / pf[0]:>14.3f}{avg([x[0] for x in bi]) / bf[0]:>14.3f}")
print(f"{'incremental / full: stored':28}{avg([x[1] for x in pi]) / pf[1]:>14.3f}{avg([x[1] for x in bi]) / bf[1]:>14.3f}")
line(f"restore full+{n}: command", float(pgv_r), float(br_r), " s", sec)
line(f"  start until promoted", float(pgv_s), float(br_s), " s", sec)
line(f"  total", float(pgv_r) + float(pgv_s), float(br_r) + float(br_s), " s", sec)
print("\nper backup (tool kind seconds bytes):")
for r in rows:
    print("  " + "\t".join(r))
EOF
echo "pgvigil restore's phases:"
grep -v '^{' "$LOGDIR/incr-restore-pgvigil.log" | grep -v 'WAL archiving is off' | sed 's/^/  /'
