#!/usr/bin/env bash
# Backup / restore benchmark: `pgvigil backup` and `pgvigil restore` against
# pgBackRest and pg_basebackup, side by side in one run, on the bench cluster
# of scrape.sh (PG 15, pgbench -s 50 + 3000 small tables, ~1.1 GB, ~25,600 files).
#
# Phases (in this order, all against 127.0.0.1:$PGPORT):
#   1. pgbr      archive_command = pgbackrest archive-push (its own stanza and
#                posix repo under $BENCH_DIR/backup/pgbr); RUNS x
#                `pgbackrest --type=full backup` (zstd, process-max=2, repo1-bundle=y,
#                start-fast; archive-check on, as a real user runs it)
#   2. pgvigil   archive_command = pgvigil wal-push (file:// repo under
#                $BENCH_DIR/backup/pgvigil-repo); RUNS rounds of
#                `pg_basebackup -D DIR -Ft -X fetch --compress=client-zstd` (baseline)
#                then `pgvigil backup`, taking turns
#   3. restore   RUNS rounds, taking turns: `pgvigil restore --backup latest` and
#                `pgbackrest restore` (process-max=2), each into a fresh dir, then
#                PostgreSQL started on it (port $RESTORE_PORT, archive_mode=off):
#                time until it accepts connections and until recovery has ended
#                (promoted); pgbench_accounts rows checked on each
#   4. encryption  the cost of [storage.encryption]: archive_command pushes to a
#                plain and a sealed file:// repository (one wal-push each); RUNS
#                rounds of `pgvigil backup` into each (order alternating), then
#                RUNS rounds of restore + start from each; ratios sealed / plain
#   5. wal-push  archiving paused, WAL generated (pgbench + a scratch-table insert),
#                WALPUSH_N segments copied; archiving resumed through pgvigil and the
#                backlog drain timed (pg_stat_archiver + wal-push's own log lines);
#                then WALPUSH_N hand runs of `pgvigil wal-push` on the copies into a
#                fresh repo, the same again (identical-content path), and
#                `pgbackrest archive-push` on the same copies for comparison
# Every measured command runs as user postgres under `/usr/bin/time -v` (wall,
# "Maximum resident set size" = largest single process of the tree) and a
# sampler that reads VmHWM of each process of the tree every 100 ms (pgvigil's
# own peak apart from the pg_basebackup it spawns, and the peak of the sum).
#
# Bounded: the script re-execs itself under `timeout` (BENCH_TIMEOUT), every
# step has its own timeout, only 127.0.0.1 is used. On exit it stops what it
# started (restored clusters, the bench cluster), puts the cluster's
# archive_mode / archive_command back (ALTER SYSTEM RESET) and removes the
# restore and pg_basebackup output dirs; the repositories stay under
# $BENCH_DIR/backup until the next run.
#
# Usage (as root):  bench/backup.sh [--smoke]      (--smoke: RUNS=1)
#                   PHASES="encryption" bench/backup.sh   (only those phases of
#                   pgbr pgvigil restore encryption wal-push, in that order)
# See bench/README.md for every setting.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

SMOKE=${SMOKE:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then export RUNS=1; fi

# Watchdog: nothing in this script may run unbounded, whatever hangs.
if [ -z "${PGVIGIL_BACKUP_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_BACKUP_BENCH_WATCHDOG=1 SMOKE
  exec timeout -k 30 "${BENCH_TIMEOUT:-3600}" bash "$0"
fi

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and runs servers as user postgres)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-3}
WALPUSH_N=${WALPUSH_N:-20}          # hand-run wal-push / archive-push per pass
WAL_SEGMENTS=${WAL_SEGMENTS:-40}    # at least this many segments in the archiver backlog
WALGEN_SECONDS=${WALGEN_SECONDS:-10} # pgbench -T for the WAL generation
if [ "$SMOKE" = 1 ]; then QUIET_WAIT=${QUIET_WAIT:-30} QUIET_PHASE_WAIT=${QUIET_PHASE_WAIT:-10}; fi
QUIET_ROUND_WAIT=${QUIET_ROUND_WAIT:-60}
RESTORE_PORT=${RESTORE_PORT:-55443}
# pgvigil's [server] listen in the bench configs: wal-push reports each push to
# 127.0.0.1:<this port> (best effort, 200 ms bound); nothing listens here, so the
# report costs a refused connect, as on a host where the daemon is not running.
BK_LISTEN_PORT=${BK_LISTEN_PORT:-59434}

BK=$BENCH_DIR/backup                 # repos, restore dirs, per-run logs
PGV_REPO=$BK/pgvigil-repo
PGV_CONF=$BK/conf/pgvigil-backup.toml
PGV_ENC_REPO=$BK/pgvigil-sealed-repo # phase encryption: the sealed repository
PGV_ENC_CONF=$BK/conf/pgvigil-sealed.toml
PGV_ENC_KEY=$BK/conf/pgvigil-bench.key
PHASES=${PHASES:-pgbr pgvigil restore encryption wal-push}
WP_REPO=$BK/walpush-repo             # fresh repo for the hand-run wal-push passes
WP_CONF=$BK/conf/pgvigil-walpush.toml
PGBR=$BK/pgbr
PGBR_CONF=$PGBR/pgbackrest.conf
RST=$BK/restore
BB_OUT=$BK/basebackup-out
WALCOPY=$BK/walcopies
PGVIGIL=$BINDIR/pgvigil
PGBACKREST=/usr/bin/pgbackrest
PYTHON=/usr/bin/python3
EXPECTED_ROWS=$((SCALE * 100000))

ms_now() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
ms_since() { echo $(( $(ms_now) - $1 )); }
ms2s() { awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }'; }

# ---------------------------------------------------------------- tools

ensure_tools() {
  ensure_packages postgresql-15 postgresql-contrib pgbackrest zstd time curl python3
  local f
  for f in "$PGBIN/pg_basebackup" "$PGBIN/pg_ctl" "$PGBIN/pgbench" "$PGBACKREST" /usr/bin/time "$PYTHON"; do
    [ -x "$f" ] || die "$f missing after install"
  done
}

# Build (if missing or older than the sources) and copy the binary to $BINDIR,
# where the postgres user can execute it (restore_command points at this copy).
PGVIGIL_NOTE=""
ensure_pgvigil_bin() {
  build_pgvigil "$LOGDIR/cargo-build-backup.log" || return 1
  install -m 0755 "$PGVIGIL_BIN" "$PGVIGIL"
  PGVIGIL_SRC=$PGVIGIL_BIN
}

# ---------------------------------------------------------------- dirs, configs

prepare_dirs() {
  mkdir -p "$BENCH_DIR" "$BENCH_DIR/pg15" "$RUNDIR" "$LOGDIR" "$CONFDIR" "$BINDIR" "$BK/conf"
  chown postgres:postgres "$BENCH_DIR/pg15" "$RUNDIR" "$LOGDIR"
  chmod 0755 "$BENCH_DIR" "$CONFDIR" "$BINDIR" "$BK/conf"
  # fresh repositories every run: the numbers never depend on what an earlier run left
  rm -rf "${PGV_REPO:?}" "${PGV_ENC_REPO:?}" "${WP_REPO:?}" "${PGBR:?}" "${RST:?}" "${BB_OUT:?}" "${WALCOPY:?}" "${BK:?}/home"
  mkdir -p "$PGV_REPO" "$PGV_ENC_REPO" "$WP_REPO" "$PGBR"/{repo,log,lock,spool} "$RST" "$BB_OUT" "$WALCOPY" "$BK/home"
  chown postgres:postgres "$BK"
  chown -R postgres:postgres "$PGV_REPO" "$PGV_ENC_REPO" "$WP_REPO" "$PGBR" "$RST" "$BB_OUT" "$WALCOPY" "$BK/home"
}

write_configs() {
  local url
  for url in "$PGV_CONF:$PGV_REPO" "$WP_CONF:$WP_REPO"; do
    cat >"${url%%:*}" <<EOF
# written by bench/backup.sh: bench cluster, file:// repository, loopback only
[server]
listen = "127.0.0.1:$BK_LISTEN_PORT"
[postgres]
dsn = "postgresql://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
[storage]
url = "file://${url#*:}"
EOF
    chmod 0644 "${url%%:*}"
  done
  # the sealed repository: the same, with a random key in a file only postgres reads
  (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$PGV_ENC_KEY")
  chown postgres:postgres "$PGV_ENC_KEY"
  sed "s|^url = .*|url = \"file://$PGV_ENC_REPO\"|" "$PGV_CONF" >"$PGV_ENC_CONF"
  printf '[storage.encryption]\nkey_id = "bench"\nkey_file = "%s"\n' "$PGV_ENC_KEY" >>"$PGV_ENC_CONF"
  chmod 0644 "$PGV_ENC_CONF"
  # pgBackRest: the anchors' "best" configuration (process-max 2 + bundling), own paths.
  cat >"$PGBR_CONF" <<EOF
[global]
repo1-type=posix
repo1-path=$PGBR/repo
repo1-retention-full=2
repo1-bundle=y
compress-type=zst
start-fast=y
process-max=2
log-path=$PGBR/log
lock-path=$PGBR/lock
spool-path=$PGBR/spool
log-level-console=warn
log-level-file=info

[bench]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$RUNDIR
pg1-user=postgres
EOF
  chown postgres:postgres "$PGBR_CONF"; chmod 0640 "$PGBR_CONF"
}

pgbr() { timeout 600 runuser -u postgres -- "$PGBACKREST" --config="$PGBR_CONF" --stanza=bench "$@"; }

# ---------------------------------------------------------------- cluster

# The cluster is scrape.sh's. Built here only if missing, by scrape.sh itself
# (one smoke scrape of postgres_exporter), so there is one definition of it.
ensure_cluster_built() {
  [ -f "$BENCH_DIR/pg15/setup-done" ] && [ -f "$PGDATA/PG_VERSION" ] && return 0
  log "bench cluster missing: building it with bench/scrape.sh --smoke --only pgexp-default"
  SMOKE=1 ONLY=pgexp-default PGVIGIL_BENCH_WATCHDOG='' BENCH_TIMEOUT=1800 \
    bash "$BENCH_SRC/scrape.sh" --smoke --only pgexp-default >"$LOGDIR/backup-cluster-build.log" 2>&1 ||
    die "building the bench cluster failed, see $LOGDIR/backup-cluster-build.log"
}

CLUSTER_TOUCHED=0
# replication over loopback (pg_basebackup, pgvigil backup, pgBackRest) and
# archive_mode=on; a restart only if archive_mode was off.
prepare_cluster() {
  if ! grep -qE '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32' "$PGDATA/pg_hba.conf"; then
    log "pg_hba.conf: adding 'host replication all 127.0.0.1/32 trust'"
    echo "host    replication   all   127.0.0.1/32   trust" >>"$PGDATA/pg_hba.conf"
  fi
  start_cluster
  CLUSTER_TOUCHED=1
  psql_b -d postgres -c "SELECT pg_reload_conf()" >/dev/null
  ORIG_ARCHIVE_MODE=$(psql_v -d postgres -c "SHOW archive_mode")
  if [ "$ORIG_ARCHIVE_MODE" != on ]; then
    log "archive_mode=$ORIG_ARCHIVE_MODE: ALTER SYSTEM SET archive_mode=on and restart"
    psql_b -d postgres -c "ALTER SYSTEM SET archive_command = ''" -c "ALTER SYSTEM SET archive_mode = on" >/dev/null
    stop_cluster
    start_cluster
  fi
  [ "$(psql_v -d postgres -c 'SHOW archive_mode')" = on ] || die "archive_mode is not on after restart"
}

set_archive_command() {
  local cmd=$1 q
  q=${cmd//\'/\'\'}
  psql_b -d postgres -c "ALTER SYSTEM SET archive_command = '$q'" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
}

ready_count() {
  local r; shopt -s nullglob; r=("$PGDATA"/pg_wal/archive_status/*.ready); shopt -u nullglob
  echo "${#r[@]}"
}

# wait_archived SECONDS : until no segment waits for the archiver
wait_archived() {
  local limit=$1 i
  for ((i = 0; i < limit * 10; i++)); do
    [ "$(ready_count)" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}

archiver_stats() {
  psql_v -d postgres -c "SELECT archived_count, failed_count, coalesce(last_archived_wal, '-'), coalesce(last_failed_wal, '-') FROM pg_stat_archiver"
}

# ---------------------------------------------------------------- measuring

BG_PIDS=()
RESTORED_DATA=""

# tree_sampler ROOT OUT : every 100 ms, VmHWM of every process under ROOT (by
# process name; the timeout/time/env wrappers left out) and the sum of their
# VmRSS; when ROOT is gone writes "NAME max_hwm_kb" lines and "_sum max_kb".
tree_sampler() {
  local root=$1 out=$2 p f k v name h r sum maxsum=0
  local -A hwm=()
  local -a queue kids all
  while [ -d "/proc/$root" ]; do
    queue=("$root"); all=()
    while [ ${#queue[@]} -gt 0 ]; do
      p=${queue[0]}; queue=("${queue[@]:1}"); all+=("$p")
      for f in /proc/"$p"/task/*/children; do
        kids=(); read -r -a kids 2>/dev/null <"$f" || true
        [ ${#kids[@]} -gt 0 ] && queue+=("${kids[@]}")
      done
    done
    sum=0
    for p in "${all[@]}"; do
      name="" h=0 r=0
      while read -r k v _; do
        case $k in Name:) name=$v ;; VmHWM:) h=$v ;; VmRSS:) r=$v ;; esac
      done 2>/dev/null <"/proc/$p/status" || true
      case $name in "" | timeout | time | env | setpriv) continue ;; esac
      ((h > ${hwm[$name]:-0})) && hwm[$name]=$h
      sum=$((sum + r))
    done
    ((sum > maxsum)) && maxsum=$sum
    sleep 0.1
  done
  {
    for k in "${!hwm[@]}"; do echo "$k ${hwm[$k]}"; done
    echo "_sum $maxsum"
  } >"$out"
}

# measured TAG LIMIT CMD... : run CMD as postgres (clean env) under
# /usr/bin/time -v and the tree sampler. Sets M_RC, M_MS (wall ms, own clock),
# M_T0 (ms_now at start), M_GNU_RSS (kB), files $RL/TAG.{timev,out,hwm}.
measured() {
  local tag=$1 limit=$2; shift 2
  local tv=$RL/$tag.timev out=$RL/$tag.out hw=$RL/$tag.hwm pid spid
  M_T0=$(ms_now)
  (cd "$BK/home" && exec timeout -k 10 "$limit" setpriv --reuid=postgres --regid=postgres --init-groups \
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$BK/home" /usr/bin/time -v -o "$tv" "$@") >"$out" 2>&1 &
  pid=$!
  BG_PIDS+=("$pid")
  tree_sampler "$pid" "$hw" &
  spid=$!
  M_RC=0; wait "$pid" || M_RC=$?
  M_MS=$(ms_since "$M_T0")
  wait "$spid" 2>/dev/null || true
  M_GNU_RSS=$(timev_rss_kb "$tv")
  if [ "$M_RC" != 0 ]; then
    log "$tag: exit status $M_RC; last lines of $out:"
    tail -n 5 "$out" >&2 || true
  fi
}

timev_rss_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
hwm_of() { awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print "-"}' "$1"; }

# the newest pgvigil backup.json (file:// repo): "id raw_bytes stored_bytes"
pgvigil_last_backup() {
  local f=""; local -a all
  shopt -s nullglob; all=("$PGV_REPO"/default/backups/*/backup.json); shopt -u nullglob
  [ ${#all[@]} -gt 0 ] && f=${all[-1]}
  [ -n "$f" ] || { echo "- - -"; return; }
  "$PYTHON" -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b["id"], b["raw_bytes"], b["stored_bytes"])' "$f"
}

# the newest pgBackRest backup: "label db_bytes repo_bytes"
pgbr_last_backup() {
  pgbr info --output=json | "$PYTHON" -c '
import json, sys
b = json.load(sys.stdin)[0]["backup"][-1]
print(b["label"], b["info"]["size"], b["info"]["repository"]["size"])' 2>/dev/null || echo "- - -"
}

# one line of backup.runs:
# tool run rc wall_s gnu_maxrss_kb main_hwm_kb child_hwm_kb tree_sum_kb stored_bytes note
record_backup() {
  local tool=$1 run=$2 main=$3 child=$4 stored=$5 note=${6:-}
  echo "$tool $run $M_RC $(ms2s "$M_MS") ${M_GNU_RSS:--} $(hwm_of "$RL/$tool-$run.hwm" "$main") \
$(if [ -n "$child" ]; then hwm_of "$RL/$tool-$run.hwm" "$child"; else echo -; fi) \
$(hwm_of "$RL/$tool-$run.hwm" _sum) $stored ${note:--}" | tee -a "$RES/backup.runs" >&2
}

# first line of an error in a command's output, for the summary
first_error() { grep -m1 -E 'pgvigil: |ERROR|error|FATAL|failed' "$1" | cut -c1-400 || tail -n1 "$1" | cut -c1-400; }

phase_pgbr() {
  log "== phase pgbr: archive_command = pgbackrest archive-push, $RUNS full backups"
  set_archive_command "$PGBACKREST --config=$PGBR_CONF --stanza=bench archive-push %p"
  pgbr stanza-create >"$RL/pgbr-stanza-create.out" 2>&1 || { cat "$RL/pgbr-stanza-create.out" >&2; die "pgbackrest stanza-create failed"; }
  pgbr check >"$RL/pgbr-check.out" 2>&1 || { cat "$RL/pgbr-check.out" >&2; die "pgbackrest check failed"; }
  local i label repo
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "pgbr round $i" "$QUIET_ROUND_WAIT"
    sync
    measured "pgbackrest-$i" 900 "$PGBACKREST" --config="$PGBR_CONF" --stanza=bench --type=full backup
    read -r label _ repo < <(pgbr_last_backup)
    [ "$M_RC" = 0 ] || { label=- repo=-; echo "pgbackrest backup run $i: $(first_error "$RL/pgbackrest-$i.out")" >>"$RES/errors.txt"; }
    record_backup pgbackrest "$i" pgbackrest "" "$repo" "$label"
  done
  pgbr info >"$RES/pgbackrest-info.txt" 2>&1 || true
}

phase_pgvigil() {
  log "== phase pgvigil: archive_command = pgvigil wal-push, $RUNS rounds of pg_basebackup + pgvigil backup"
  wait_archived 120 || log "pgBackRest archiver backlog did not drain within 120 s"
  set_archive_command "$PGVIGIL wal-push -c $PGV_CONF %p"
  # does wal-push work at all? one switched segment must come out archived
  local before after seg i
  read -r before _ < <(archiver_stats)
  seg=$(psql_v -d postgres -c "SELECT txid_current()" -c "SELECT pg_walfile_name(pg_switch_wal())" | tail -n1)
  for ((i = 0; i < 600; i++)); do
    read -r after _ < <(archiver_stats)
    ((after > before)) && break
    sleep 0.1
  done
  if ((after <= before)); then
    echo "wal-push through the archiver: segment $seg not archived within 60 s; pg_stat_archiver: $(archiver_stats); server log: $(grep -E 'archive command failed|pgvigil: ' "$PGLOG" | tail -n 2 | tr '\n' ' ')" >>"$RES/errors.txt"
    log "pgvigil wal-push via archiver is failing: $(tail -n1 "$RES/errors.txt")"
  else
    log "archiver: segment $seg archived through pgvigil wal-push"
  fi
  local id stored
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "pgvigil round $i" "$QUIET_ROUND_WAIT"
    rm -rf "${BB_OUT:?}"/*; sync
    measured "pg_basebackup-$i" 900 "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres \
      -c fast -D "$BB_OUT/run$i" -Ft -X fetch --compress=client-zstd
    stored=$(du -sb "$BB_OUT/run$i" 2>/dev/null | cut -f1); stored=${stored:--}
    [ "$M_RC" = 0 ] || echo "pg_basebackup run $i: $(first_error "$RL/pg_basebackup-$i.out")" >>"$RES/errors.txt"
    record_backup pg_basebackup "$i" pg_basebackup "" "$stored"
    rm -rf "${BB_OUT:?}"/*; sync

    measured "pgvigil-$i" 900 "$PGVIGIL" backup -c "$PGV_CONF"
    read -r id _ stored < <(pgvigil_last_backup)
    if [ "$M_RC" != 0 ]; then
      echo "pgvigil backup run $i (exit $M_RC): $(grep -m1 '^pgvigil: ' "$RL/pgvigil-$i.out" || tail -n1 "$RL/pgvigil-$i.out")" >>"$RES/errors.txt"
      stored=-; id=-
    fi
    record_backup pgvigil "$i" pgvigil pg_basebackup "$stored" "$id"
  done
  ls -l "$PGV_REPO"/default/backups/ >"$RES/pgvigil-backups-ls.txt" 2>&1 || true
  timeout 60 runuser -u postgres -- "$PGVIGIL" backups -c "$PGV_CONF" >"$RES/pgvigil-backups.txt" 2>&1 || true
}

# ---------------------------------------------------------------- restore

restored_running() { [ -n "$RESTORED_DATA" ] && [ -f "$RESTORED_DATA/postmaster.pid" ]; }
stop_restored() {
  if restored_running; then
    timeout 120 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RESTORED_DATA" -m immediate -w -t 100 stop >/dev/null 2>&1 || true
  fi
  RESTORED_DATA=""
}

# wait_until SECONDS CMD... : poll every 50 ms, bounded
wait_until() {
  local limit=$1 i; shift
  for ((i = 0; i < limit * 20; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}
restored_ready() { runuser -u postgres -- "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$RESTORE_PORT"; }
restored_promoted() {
  [ "$(runuser -u postgres -- "$PGBIN/psql" -X -h 127.0.0.1 -p "$RESTORE_PORT" -U postgres -d postgres -At \
    -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]
}

# restore_one TOOL RUN [CONF RUNS_FILE] : restore + start + wait; appends to RUNS_FILE
# (restore.runs); TOOL pgvigil, pgbackrest, or plain / sealed (pgvigil with CONF)
# columns: tool run rc restore_s accept_s promoted_s gnu_maxrss_kb main_hwm_kb rows note
restore_one() {
  # A new directory per run, and nothing deleted until the phase is over: this
  # ext4 has no journal, and then ext4 skips inodes freed in the last ~30 s when it
  # allocates new ones (recently_deleted()), which made a restore right after an
  # `rm -rf` of the previous one up to 3x slower, growing from run to run.
  local tool=$1 i=$2 data=$RST/$1-$2 acc=- pro=- rows=- note=-
  local conf=${3:-$PGV_CONF} runs=${4:-$RES/restore.runs} proc=$1
  [ "$tool" = pgbackrest ] || proc=pgvigil
  stop_restored
  sync
  if port_open "$RESTORE_PORT"; then
    echo "$tool restore run $i: port $RESTORE_PORT already in use" >>"$RES/errors.txt"; return 1
  fi
  case $tool in
    pgvigil | plain | sealed)
      # pgvigil creates the directory itself (it must be missing or empty)
      measured "restore-$tool-$i" 900 "$PGVIGIL" restore -c "$conf" --to "$data" --backup latest ;;
    pgbackrest)
      mkdir -p "$data"; chmod 700 "$data"; chown postgres:postgres "$data"
      measured "restore-$tool-$i" 900 "$PGBACKREST" --config="$PGBR_CONF" --stanza=bench \
        --pg1-path="$data" --archive-mode=off restore ;;
  esac
  local t0=$M_T0 rs; rs=$(ms2s "$M_MS")
  if [ "$M_RC" != 0 ]; then
    echo "$tool restore run $i (exit $M_RC): $(grep -m1 -E '^pgvigil: |ERROR' "$RL/restore-$tool-$i.out" || tail -n1 "$RL/restore-$tool-$i.out")" >>"$RES/errors.txt"
    note=restore-failed
  else
    RESTORED_DATA=$data
    # archive_mode=off: a restored copy must never archive into the repositories
    timeout 60 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$data" -l "$RL/pg-restored-$tool-$i.log" \
      -o "-p $RESTORE_PORT -c archive_mode=off -c listen_addresses=127.0.0.1" start >/dev/null 2>&1 || true
    if wait_until 600 restored_ready; then
      acc=$(ms2s "$(ms_since "$t0")")
      if wait_until 600 restored_promoted; then
        pro=$(ms2s "$(ms_since "$t0")")
      else
        note=not-promoted-in-600s
      fi
      rows=$(timeout 120 runuser -u postgres -- "$PGBIN/psql" -X -h 127.0.0.1 -p "$RESTORE_PORT" -U postgres \
        -d bench -At -c 'SELECT count(*) FROM pgbench_accounts' 2>>"$RL/restore-$tool-$i.out") || rows=error
      [ "$rows" = "$EXPECTED_ROWS" ] || {
        note="rows-mismatch"
        echo "$tool restore run $i: pgbench_accounts has $rows rows, expected $EXPECTED_ROWS" >>"$RES/errors.txt"
      }
    else
      note=not-accepting-in-600s
      echo "$tool restore run $i: restored cluster did not accept connections within 600 s; log: $(tail -n 3 "$RL/pg-restored-$tool-$i.log" | tr '\n' ' ')" >>"$RES/errors.txt"
    fi
    # recovery facts from the restored server's log
    grep -E 'redo done|archive recovery complete|selected new timeline|restored log file' "$RL/pg-restored-$tool-$i.log" \
      | sed "s/^/[$tool-$i] /" >>"$RES/restore-recovery.log" 2>/dev/null || true
  fi
  echo "$tool $i $M_RC $rs $acc $pro ${M_GNU_RSS:--} $(hwm_of "$RL/restore-$tool-$i.hwm" "$proc") $rows $note" \
    | tee -a "$runs" >&2
  stop_restored
}

phase_restore() {
  log "== phase restore: $RUNS rounds of pgvigil restore and pgbackrest restore (+ start until accepting / promoted)"
  local i
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "restore round $i" "$QUIET_ROUND_WAIT"
    restore_one pgvigil "$i" || true
    restore_one pgbackrest "$i" || true
  done
  du -sb "$RST"/* >"$RES/restore-du.txt" 2>/dev/null || true
  rm -rf "${RST:?}"/*
}

# ---------------------------------------------------------------- encryption

# the newest backup directory's size in a file:// repository (bytes)
newest_backup_bytes() {
  local -a all
  shopt -s nullglob; all=("$1"/default/backups/*/); shopt -u nullglob
  [ ${#all[@]} -gt 0 ] && du -sb "${all[-1]}" | cut -f1 || echo -
}

phase_encryption() {
  log "== phase encryption: pgvigil backup and restore, plain and sealed repositories, $RUNS rounds each"
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
  set_archive_command "$PGVIGIL wal-push -c $PGV_CONF %p && $PGVIGIL wal-push -c $PGV_ENC_CONF %p"
  local i kind conf repo
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "encryption round $i" "$QUIET_ROUND_WAIT"
    # alternate which goes first, so neither always runs on a cache the other warmed
    for kind in $( ((i % 2)) && echo "plain sealed" || echo "sealed plain"); do
      case $kind in plain) conf=$PGV_CONF repo=$PGV_REPO ;; sealed) conf=$PGV_ENC_CONF repo=$PGV_ENC_REPO ;; esac
      sync
      measured "backup-$kind-$i" 900 "$PGVIGIL" backup -c "$conf"
      [ "$M_RC" = 0 ] || echo "encryption: $kind backup run $i (exit $M_RC): $(first_error "$RL/backup-$kind-$i.out")" >>"$RES/errors.txt"
      echo "$kind $i $M_RC $(ms2s "$M_MS") ${M_GNU_RSS:--} $(newest_backup_bytes "$repo")" | tee -a "$RES/encryption-backup.runs" >&2
    done
  done
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "encryption restore round $i" "$QUIET_ROUND_WAIT"
    for kind in $( ((i % 2)) && echo "plain sealed" || echo "sealed plain"); do
      case $kind in plain) conf=$PGV_CONF ;; sealed) conf=$PGV_ENC_CONF ;; esac
      restore_one "$kind" "$i" "$conf" "$RES/encryption-restore.runs" || true
    done
  done
  rm -rf "${RST:?}"/*
  # what the sealed repository holds really is ciphertext
  local base; base=$(find "$PGV_ENC_REPO/default/backups" -name base.tar.zst | head -n1)
  [ -n "$base" ] && [ "$(head -c 8 "$base")" = PGVSEAL1 ] ||
    echo "encryption: the sealed repository's base object does not start with PGVSEAL1" >>"$RES/errors.txt"
}

# ---------------------------------------------------------------- wal-push

# hand_push_pass TOOL PASS : push every copy in $WALCOPY once, as postgres, each
# timed with bash's EPOCHREALTIME around `/usr/bin/time -f %M CMD` (peak RSS).
# Appends "tool pass segment ms rc maxrss_kb" to walpush.runs.
hand_push_pass() {
  local tool=$1 pass=$2 cmd
  local -a files
  shopt -s nullglob; files=("$WALCOPY"/*); shopt -u nullglob   # glob order is sorted
  case $tool in
    pgvigil) cmd="$PGVIGIL wal-push -c $WP_CONF" ;;
    pgbackrest) cmd="$PGBACKREST --config=$PGBR_CONF --stanza=bench archive-push" ;;
  esac
  # shellcheck disable=SC2016  # the inner bash expands them
  timeout 600 setpriv --reuid=postgres --regid=postgres --init-groups \
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$BK/home" bash -c '
      tool=$1 pass=$2 cmd=$3 log=$4 tv=$5; shift 5
      for f in "$@"; do
        s=${EPOCHREALTIME/./}
        /usr/bin/time -f %M -o "$tv" $cmd "$f" >>"$log" 2>&1; rc=$?
        e=${EPOCHREALTIME/./}
        echo "$tool $pass ${f##*/} $(( (e - s) / 1000 )).$(( (e - s) % 1000 / 100 )) $rc $(tail -n1 "$tv")"
      done' _ "$tool" "$pass" "$cmd" "$RL/walpush-$tool-$pass.out" "$RL/walpush.timev" \
    "${files[@]}" >>"$RES/walpush.runs" 2>>"$RL/walpush-$tool-$pass.err" || true
}

phase_walpush() {
  log "== phase wal-push: pause archiving, generate WAL, drain through pgvigil, hand runs"
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
  set_archive_command ""      # archiving paused: segments wait with .ready
  local c0 f0 c1 f1 backlog i
  timeout 120 runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres \
    -n -c 4 -j 2 -T "$WALGEN_SECONDS" bench >"$RL/walgen-pgbench.log" 2>&1 ||
    log "pgbench for WAL generation failed, see $RL/walgen-pgbench.log"
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_walgen" \
    -c "CREATE TABLE pgvigil_bench_walgen (id int, payload text)" >/dev/null
  for ((i = 0; i < 30; i++)); do
    if (($(ready_count) >= WAL_SEGMENTS)); then break; fi
    # ~12 MB of WAL per batch: ids, md5 text (half compressible), tuple headers
    psql_b -d postgres -c "INSERT INTO pgvigil_bench_walgen SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 100000) g" >/dev/null
    psql_b -d postgres -c "SELECT pg_switch_wal()" >/dev/null
  done
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_walgen" -c "SELECT pg_switch_wal()" >/dev/null
  sleep 1
  backlog=$(ready_count)
  log "archiver backlog: $backlog segments"
  # copies of WALPUSH_N segments spread evenly over the backlog (its start is
  # pgbench WAL, the rest the scratch-table insert: both kinds are in the sample)
  local n=0 r j total
  local -a readies segs=()
  shopt -s nullglob; readies=("$PGDATA"/pg_wal/archive_status/*.ready); shopt -u nullglob
  for r in "${readies[@]}"; do
    r=${r##*/}; r=${r%.ready}
    [[ $r =~ ^[0-9A-F]{24}$ ]] && segs+=("$r")
  done
  total=${#segs[@]}
  for ((j = 0; j < WALPUSH_N && j < total; j++)); do
    r=${segs[$((total > WALPUSH_N ? j * total / WALPUSH_N : j))]}
    runuser -u postgres -- cp "$PGDATA/pg_wal/$r" "$WALCOPY/$r"
    echo "$r" >>"$RES/walpush-segments.txt"
    n=$((n + 1))
  done
  log "copied $n segments for the hand runs"

  # archiver drain through pgvigil wal-push
  read -r c0 f0 _ < <(archiver_stats)
  local off t0 ms drained=yes
  off=$(log_size)
  t0=$(ms_now)
  set_archive_command_nosleep "$PGVIGIL wal-push -c $PGV_CONF %p"
  wait_archived 600 || drained=no
  ms=$(ms_since "$t0")
  read -r c1 f1 _ < <(archiver_stats)
  log_since "$off" | grep -o '"event":"wal.push.[a-z]*"[^}]*' >"$RL/walpush-archiver-events.txt" || true
  log_since "$off" | grep -E 'archive command failed|pgvigil: ' | head -n 20 >"$RL/walpush-archiver-errors.txt" || true
  # "segment ms" per push, from wal-push's own log line (field "seconds")
  grep '"event":"wal.push.completed"' "$RL/walpush-archiver-events.txt" \
    | sed -nE 's/.*"wal":"([^"]*)".*"seconds":([0-9.e-]+).*/\1 \2/p' \
    | awk '{printf "%s %.2f\n", $1, $2 * 1000}' >"$RES/walpush-archiver-inner-ms.txt" || true
  {
    echo "backlog_segments $backlog"
    echo "drained_within_600s $drained"
    echo "drain_ms $ms"
    echo "archived_delta $((c1 - c0))"
    echo "failed_delta $((f1 - f0))"
    echo "ms_per_segment $(div "$ms" "$((c1 - c0))" %.1f)"
    echo "inner_push_ms_all (n min median max; wal-push's own \"seconds\" log field) $(cut -d' ' -f2 "$RES/walpush-archiver-inner-ms.txt" | stats)"
    echo "inner_push_ms_hand_run_segments $(inner_of_copies | stats)"
    echo "pushed_log_lines $(grep -c 'wal.push.completed' "$RL/walpush-archiver-events.txt" || true)"
  } >"$RES/walpush-archiver.txt"
  ((f1 <= f0)) || echo "archiver wal-push failures during the drain: $((f1 - f0)); first lines: $(head -n 2 "$RL/walpush-archiver-errors.txt" | tr '\n' ' ')" >>"$RES/errors.txt"
  log "archiver drain: $((c1 - c0)) segments in $ms ms ($(div "$ms" "$((c1 - c0))" %.1f) ms/segment), failures $((f1 - f0))"

  # hand runs: fresh repo (new objects), then the same files again (identical content)
  if ((n > 0)); then
    hand_push_pass pgvigil fresh
    hand_push_pass pgvigil again
    hand_push_pass pgbackrest fresh
    hand_push_pass pgbackrest again
    awk '$5 != 0' "$RES/walpush.runs" | head -n 3 | while read -r l; do
      echo "hand push failed: $l; output: $(grep -m1 -E 'pgvigil: |ERROR' "$RL/walpush-${l%% *}-$(echo "$l" | cut -d' ' -f2).out")" >>"$RES/errors.txt"
    done
  fi
}

# archiver push times (ms) of the segments the hand runs use
inner_of_copies() {
  [ -s "$RES/walpush-segments.txt" ] || return 0
  awk 'NR == FNR { want[$1] = 1; next } ($1 in want) { print $2 }' \
    "$RES/walpush-segments.txt" "$RES/walpush-archiver-inner-ms.txt"
}

set_archive_command_nosleep() {
  local q=${1//\'/\'\'}
  psql_b -d postgres -c "ALTER SYSTEM SET archive_command = '$q'" -c "SELECT pg_reload_conf()" >/dev/null
}

# ---------------------------------------------------------------- quiet host

# busy and total jiffies of the host, from /proc/stat
host_cpu() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# wait_quiet PHASE [LIMIT] : this is a shared 2-core machine; wait (at most QUIET_WAIT s
# before the first phase, QUIET_PHASE_WAIT before later ones, LIMIT if given:
# QUIET_ROUND_WAIT before each round of a phase) until the host is
# nearly idle (busy < QUIET_BUSY % over 3 s). Notes go to $RES/quiet.txt.
QUIET_FIRST=1
wait_quiet() {
  local phase=$1 limit max=${QUIET_BUSY:-15} waited=0 a b busy note
  limit=$([ "$QUIET_FIRST" = 1 ] && echo "${QUIET_WAIT:-600}" || echo "${QUIET_PHASE_WAIT:-180}")
  [ -n "${2:-}" ] && limit=$2
  QUIET_FIRST=0
  while :; do
    a=$(host_cpu); sleep 3; b=$(host_cpu)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    note="$phase: host busy ${busy}% before measuring (waited ${waited}s)"
    ((busy < max)) && break
    ((waited == 0)) && log "host busy ${busy}% (other jobs?); waiting until below ${max}% (at most ${limit}s)"
    if ((waited >= limit)); then
      note="$note — NOT QUIET: other processes competed for the CPUs"
      log "still ${busy}% busy after ${limit}s; measuring anyway"; break
    fi
    waited=$((waited + 3))
  done
  echo "$note" >>"$RES/quiet.txt"
}

# ---------------------------------------------------------------- cleanup

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM HUP
  for p in "${BG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && stop_pid "$p"; done
  stop_restored
  if [ "$CLUSTER_TOUCHED" = 1 ] && pg_running; then
    # leave the cluster as scrape.sh expects it: no archiving
    psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_walgen" \
      -c "ALTER SYSTEM RESET archive_command" -c "ALTER SYSTEM RESET archive_mode" >/dev/null 2>&1 ||
      log "could not reset archive_mode / archive_command"
  fi
  if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/PG_VERSION" ]; then
    stop_cluster || log "could not stop the bench cluster cleanly"
  fi
  rm -rf "${RST:?}" "${BB_OUT:?}" "${WALCOPY:?}"
  exit "$rc"
}

# ---------------------------------------------------------------- report

# st FILE TOOL COL : "median (min–max)" of column COL for TOOL rows with rc 0
st() {
  local s; s=$(awk -v t="$2" -v c="$3" '$1 == t && $3 == 0 && $c != "-" {print $c}' "$1" | stats)
  echo "$s" | awk '{ if ($1 == 0) print "n/a"; else printf "%s (%s–%s, n=%s)\n", $3, $2, $4, $1 }'
}
med() { awk -v t="$2" -v c="$3" '$1 == t && $3 == 0 && $c != "-" {print $c}' "$1" | stats | awk '{print ($1 == 0) ? "n/a" : $3}'; }
kb2mb() { awk -v k="$1" 'BEGIN { if (k == "n/a" || k == "-" || k == "") print "n/a"; else printf "%.1f", k / 1024 }'; }
stmb() {
  local s; s=$(awk -v t="$2" -v c="$3" '$1 == t && $3 == 0 && $c != "-" {print $c / 1024}' "$1" | stats)
  echo "$s" | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f (%.1f–%.1f)\n", $3, $2, $4 }'
}
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 <= t + 0) print "met"; else print "NOT met" }'; }

# other work on the machine (other bench scripts, compiles, load generators), measured
# rather than guessed from process names: the host's CPU busy % over 1 s (/proc/stat) and
# the runnable/total tasks of /proc/loadavg (this script's own included)
busy_others() {
  local a b
  a=$(host_cpu); sleep 1; b=$(host_cpu)
  awk -v a="$a" -v b="$b" -v r="$(cut -d' ' -f4 /proc/loadavg)" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "host %.0f%% busy over 1 s, %s runnable/total tasks\n", 100 * (y[1] - x[1]) / (y[2] - x[2]), r }'
}

context() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cpus, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "postgres: $(psql_v -d postgres -c 'SHOW server_version')"
    echo "pg_basebackup: $("$PGBIN/pg_basebackup" --version)"
    echo "pgbackrest: $("$PGBACKREST" version)"
    echo "pgvigil: $("$PGVIGIL" --version 2>&1 | head -n1) ($PGVIGIL_SRC, copied to $PGVIGIL)"
    echo "repo: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' +uncommitted changes')"
    echo "cluster: $(cat "$BENCH_DIR/pg15/setup-done")"
    echo "databases: $(psql_v -d postgres -c "SELECT string_agg(datname || '=' || pg_size_pretty(pg_database_size(datname)), ' ' ORDER BY datname) FROM pg_database")"
    echo "cluster_total_bytes: $(psql_v -d postgres -c 'SELECT sum(pg_database_size(datname)) FROM pg_database')"
    echo "pgdata_files: $(find "$PGDATA" -path "$PGDATA/pg_wal" -prune -o -type f -print | wc -l) (pg_wal left out)"
    echo "pgdata_du_bytes_without_pg_wal: $(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)"
    echo "runs: $RUNS  walpush_n: $WALPUSH_N"
    echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "other work at the start: $(busy_others)"
    echo "busiest processes before (pcpu since start):"
    ps -eo pcpu=,comm= --sort=-pcpu | head -n 5 | sed 's/^/  /'
  } >"$RES/context.txt"
}

summary() {
  local f=$RES/summary.txt b=$RES/backup.runs r=$RES/restore.runs w=$RES/walpush.runs
  local pv pb bb pvr pbr pvp pbp rss_own rss_tree
  pv=$(med "$b" pgvigil 4); pb=$(med "$b" pgbackrest 4); bb=$(med "$b" pg_basebackup 4)
  pvr=$(med "$r" pgvigil 5); pbr=$(med "$r" pgbackrest 5)
  pvp=$(med "$r" pgvigil 6); pbp=$(med "$r" pgbackrest 6)
  local pbmin; pbmin=$(awk '$1 == "pgbackrest" && $3 == 0 {print $4}' "$b" | sort -g | head -n1)
  rss_own=$(awk '$1 == "pgvigil" && $3 == 0 && $6 != "-" {print $6}' "$b" | sort -g | tail -n1)
  rss_tree=$(awk '$1 == "pgvigil" && $3 == 0 && $8 != "-" {print $8}' "$b" | sort -g | tail -n1)
  local r_b_pb r_b_bb r_r r_rp r_b_pbmin
  r_b_pb=$(div "$pv" "$pb" %.3f); r_b_bb=$(div "$pv" "$bb" %.3f); r_b_pbmin=$(div "$pv" "${pbmin:-n/a}" %.3f)
  r_r=$(div "$pvr" "$pbr" %.3f); r_rp=$(div "$pvp" "$pbp" %.3f)
  {
    echo "# pgvigil backup bench — $(date -u +%FT%TZ) — RUNS=$RUNS"
    sed 's/^/# /' "$RES/context.txt"
    echo
    echo "## backup (wall s and MB: median (min–max, n); rc != 0 runs left out)"
    printf '%-46s %-26s %-20s %-20s %-20s %-20s %s\n' "tool" "wall s" "GNU time maxRSS MB" "main proc peak MB" "child peak MB" "tree peak sum MB" "stored MB"
    local t label main child
    for t in pgvigil pgbackrest pg_basebackup; do
      case $t in
        pgvigil) label="pgvigil backup (zstd -3, $(nproc) threads)"; child="pg_basebackup" ;;
        pgbackrest) label="pgBackRest full (zst, pm2, bundle)"; child="" ;;
        pg_basebackup) label="pg_basebackup -Ft -X fetch client-zstd"; child="" ;;
      esac
      printf '%-46s %-26s %-20s %-20s %-20s %-20s %s\n' "$label" "$(st "$b" "$t" 4)" "$(stmb "$b" "$t" 5)" \
        "$(stmb "$b" "$t" 6)" "$([ -n "$child" ] && stmb "$b" "$t" 7 || echo -)" "$(stmb "$b" "$t" 8)" \
        "$(awk -v t="$t" '$1 == t && $3 == 0 && $9 != "-" {print $9 / 1048576}' "$b" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f", $3 }')"
    done
    echo "(GNU time's maxRSS is the largest single process of the tree — for pgvigil that can be the"
    echo " pg_basebackup it spawns; 'main proc' = the sampler's VmHWM of pgvigil / pgbackrest (largest of"
    echo " its processes) / pg_basebackup itself; 'tree peak sum' = highest sum of VmRSS over the tree, 100 ms samples)"
    echo
    echo "## restore + start on port $RESTORE_PORT (s from the start of the restore command)"
    printf '%-34s %-24s %-24s %-24s %-16s %-16s %s\n' "tool" "restore cmd s" "until accepting s" "until promoted s" "maxRSS MB" "main peak MB" "pgbench_accounts"
    for t in pgvigil pgbackrest; do
      printf '%-34s %-24s %-24s %-24s %-16s %-16s %s\n' \
        "$([ $t = pgvigil ] && echo 'pgvigil restore --backup latest' || echo 'pgbackrest restore (pm2)')" \
        "$(st "$r" "$t" 4)" "$(st "$r" "$t" 5)" "$(st "$r" "$t" 6)" "$(stmb "$r" "$t" 7)" "$(stmb "$r" "$t" 8)" \
        "$(awk -v t="$t" '$1 == t {print $9}' "$r" | sort -u | tr '\n' ' ')"
    done
    echo
    if [ -s "$RES/encryption-backup.runs" ]; then
      local eb=$RES/encryption-backup.runs er=$RES/encryption-restore.runs
      echo "## encryption: pgvigil plain vs sealed ([storage.encryption], XChaCha20-Poly1305), same run"
      printf '%-10s %-26s %-26s %-26s %-26s %s\n' "repo" "backup wall s" "restore cmd s" "until accepting s" "until promoted s" "stored MB"
      for t in plain sealed; do
        printf '%-10s %-26s %-26s %-26s %-26s %s\n' "$t" "$(st "$eb" "$t" 4)" "$(st "$er" "$t" 4)" "$(st "$er" "$t" 5)" "$(st "$er" "$t" 6)" \
          "$(awk -v t="$t" '$1 == t && $3 == 0 && $6 != "-" {print $6 / 1048576}' "$eb" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f", $3 }')"
      done
      printf '  %-44s %s\n' "sealed / plain backup wall" "$(div "$(med "$eb" sealed 4)" "$(med "$eb" plain 4)" %.3f)"
      printf '  %-44s %s\n' "sealed / plain restore command" "$(div "$(med "$er" sealed 4)" "$(med "$er" plain 4)" %.3f)"
      printf '  %-44s %s\n' "sealed / plain restore until accepting" "$(div "$(med "$er" sealed 5)" "$(med "$er" plain 5)" %.3f)"
      echo
    fi
    echo "## wal-push (ms per 16 MiB segment)"
    if [ -s "$RES/walpush-archiver.txt" ]; then
      echo "archiver drain through pgvigil wal-push: $(awk '$1 == "ms_per_segment" {print $2}' "$RES/walpush-archiver.txt") ms/segment" \
        "($(awk '$1 == "archived_delta" {print $2}' "$RES/walpush-archiver.txt") segments in" \
        "$(awk '$1 == "drain_ms" {print $2}' "$RES/walpush-archiver.txt") ms, failures" \
        "$(awk '$1 == "failed_delta" {print $2}' "$RES/walpush-archiver.txt"))"
      echo "  wal-push's own push time (log field seconds), all: $(cut -d' ' -f2 "$RES/walpush-archiver-inner-ms.txt" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "median %s ms (%s–%s, n=%s)", $3, $2, $4, $1 }')"
      echo "    the segments of the hand runs: $(inner_of_copies | stats | awk '{ if ($1 == 0) print "n/a"; else printf "median %s ms (%s–%s, n=%s)", $3, $2, $4, $1 }')"
    fi
    if [ -s "$w" ]; then
      local tool pass
      for tool in pgvigil pgbackrest; do
        for pass in fresh again; do
          printf '  hand runs %-10s %-6s %s\n' "$tool" "$pass" "$(awk -v t="$tool" -v p="$pass" '$1 == t && $2 == p && $5 == 0 {print $4}' "$w" | stats |
            awk '{ if ($1 == 0) print "n/a"; else printf "median %s ms (%s–%s, n=%s)", $3, $2, $4, $1 }'), peak RSS $(
            awk -v t="$tool" -v p="$pass" '$1 == t && $2 == p && $5 == 0 {print $6}' "$w" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f MB", $4 / 1024 }'), failures $(
            awk -v t="$tool" -v p="$pass" '$1 == t && $2 == p && $5 != 0' "$w" | wc -l)"
        done
      done
      echo "  (fresh = new object in an empty repo; again = the same file pushed a second time:"
      echo "   pgvigil's identical-content path, pgBackRest's 'already exists with the same checksum')"
    fi
    echo
    echo "## ratios and targets (medians)"
    printf '  %-44s %-8s target %-8s %s\n' "pgvigil backup / pgBackRest backup" "$r_b_pb" "<= 0.5" "$(verdict "$r_b_pb" 0.5)"
    printf '  %-44s %-8s\n' "  (vs pgBackRest's fastest run)" "$r_b_pbmin"
    printf '  %-44s %-8s target %-8s %s\n' "pgvigil backup / pg_basebackup" "$r_b_bb" "<= 1.3" "$(verdict "$r_b_bb" 1.3)"
    printf '  %-44s %-8s target %-8s %s\n' "pgvigil restore / pgBackRest (accepting)" "$r_r" "<= 1/3" "$(verdict "$r_r" 0.33334)"
    printf '  %-44s %-8s\n' "pgvigil restore / pgBackRest (promoted)" "$r_rp"
    printf '  %-44s %-8s target %-8s %s\n' "pgvigil backup peak RSS, own process (MB)" "$(kb2mb "${rss_own:-n/a}")" "< 100" "$(verdict "$(kb2mb "${rss_own:-n/a}")" 99.99)"
    printf '  %-44s %-8s\n' "  pgvigil + pg_basebackup, peak sum (MB)" "$(kb2mb "${rss_tree:-n/a}")"
    echo
    if [ -s "$RES/errors.txt" ]; then
      echo "## errors"
      sed 's/^/  /' "$RES/errors.txt"
    else
      echo "errors: none"
    fi
    echo
    echo "quiet host checks:"; sed 's/^/  /' "$RES/quiet.txt" 2>/dev/null || true
    echo "loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg); other work at the end: $(busy_others)"
    echo "total: $(since "$T_TOTAL") s; raw: backup.runs restore.runs walpush.runs walpush-archiver.txt; logs: $RL"
  } >"$f"
  cat "$f"
}

# ---------------------------------------------------------------- main

main() {
  T_TOTAL=$(now)
  trap cleanup EXIT
  trap 'exit 143' INT TERM HUP
  ensure_tools
  prepare_dirs
  local stamp; stamp=$(date -u +%Y%m%dT%H%M%SZ)
  [ "$SMOKE" = 1 ] && stamp=$stamp-smoke
  RES=$BENCH_DIR/results-backup/$stamp
  RL=$RES/logs
  mkdir -p "$RL"; chmod 0755 "$RES" "$RL"; chown postgres:postgres "$RL"
  ln -sfn "$stamp" "$BENCH_DIR/results-backup/latest"
  : >"$RES/backup.runs"; : >"$RES/restore.runs"; : >"$RES/encryption-backup.runs"; : >"$RES/encryption-restore.runs"; : >"$RES/walpush.runs"; : >"$RES/walpush-segments.txt"
  log "results: $RES; RUNS=$RUNS"

  ensure_pgvigil_bin || die "no pgvigil binary: $PGVIGIL_NOTE"
  ensure_cluster_built
  write_configs
  prepare_cluster
  context

  # every tool reads a warm page cache (the cluster fits in RAM): one untimed read first
  log "warming the page cache: reading $PGDATA once"
  timeout 300 tar -C "$PGDATA" --exclude=./pg_wal -cf - . | cat >/dev/null || true
  local phase
  for phase in $PHASES; do
    case $phase in
      pgbr | pgvigil | restore | encryption) wait_quiet "$phase"; "phase_$phase" ;;
      wal-push) wait_quiet wal-push; phase_walpush ;;
      *) die "PHASES: unknown phase $phase (pgbr pgvigil restore encryption wal-push)" ;;
    esac
  done

  summary
  [ ! -s "$RES/errors.txt" ]
}

main
