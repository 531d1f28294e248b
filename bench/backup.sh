#!/usr/bin/env bash
# Backup / restore / WAL benchmark: `pgvigil backup`, `restore`, `wal-push` (with and
# without the daemon archiving ahead) and `wal-fetch` (with and without read-ahead) against
# pgBackRest 2.60 (Debian sid, scripts/pgbackrest-sid.sh) and 2.45 (Debian 12), and
# pg_basebackup, side by side in one run, on the bench cluster of scrape.sh (PG 15,
# pgbench -s 50 + 3000 small tables, ~1.1 GB, ~25,600 files).
#
# Phases (in this order, all against 127.0.0.1:$PGPORT; PHASES selects a subset; each
# phase takes the backups it needs when an earlier phase of the run did not):
#   1. pgbr      archive_command = pgbackrest archive-push into each pgBackRest's own
#                stanza and posix repo ($BENCH_DIR/backup/pgbr-<sid|d12>); RUNS x
#                `pgbackrest --type=full backup` per version, turns alternating (zstd,
#                process-max = cores, repo1-bundle=y, start-fast; archive-check on)
#   2. pgvigil   archive_command = pgvigil wal-push (file:// repo under
#                $BENCH_DIR/backup/pgvigil-repo); RUNS rounds of
#                `pg_basebackup -D DIR -Ft -X fetch --compress=client-zstd` (baseline),
#                `pgvigil backup` ([backup] streams = 4, the default) and the same with
#                streams = 1, taking turns
#   3. restore   RUNS rounds, taking turns, each into a fresh dir, then PostgreSQL started
#                on it (port $RESTORE_PORT, archive_mode=off): pgvigil restore of the
#                4-stream and the 1-stream backup, the 4-stream one again with
#                recovery_init_sync_method=syncfs (what PostgreSQL's startup fsync costs),
#                pgbackrest restore (process-max = cores) of each version. Time until it
#                accepts connections and until promoted; pgbench_accounts rows checked;
#                the time split from the restored server's log (restore command, start,
#                startup sync of the data dir, replay, end of recovery)
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
#   6. archive   a pgbench write burst (fixed work, >= BURST_SEGMENTS segments) archived by
#                (a) pgvigil wal-push + the daemon archiving ahead (`pgvigil run`),
#                (b) pgvigil wal-push alone, (c) pgBackRest 2.60 archive-push with
#                archive-async=y, process-max=2: segments/s archived during the burst,
#                lag at its end, drain time, the oldest unarchived segment's age and, for
#                (a), pgvigil_wal_archive_age_seconds from the daemon, sampled every second
#   7. replay    a backup, then >= REPLAY_SEGMENTS segments of WAL; restore to the end of
#                the archive and start: start -> promoted with wal_prefetch = 8 and 0 from
#                the file:// repository and from S3 (moto_server on loopback), and
#                pgBackRest 2.60 archive-get with and without archive-async
# Every measured command runs as user postgres under `/usr/bin/time -v` (wall,
# "Maximum resident set size" = largest single process of the tree) and a
# sampler that reads VmHWM of each process of the tree every 100 ms (pgvigil's
# own peak apart from the pg_basebackup it spawns, and the peak of the sum).
#
# Bounded: the script re-execs itself under `timeout` (BENCH_TIMEOUT), every
# step has its own timeout, only 127.0.0.1 is used (and Debian's mirror, once, to build the
# pgBackRest 2.60 chroot). On exit it stops what it started (restored clusters, the
# daemon, moto, the bench cluster), by pid, puts the cluster's archive_mode /
# archive_command back (ALTER SYSTEM RESET), drops its scratch tables and removes the
# restore and pg_basebackup output dirs; the repositories stay under $BENCH_DIR/backup
# until the next run.
#
# Usage (as root):  bench/backup.sh [--smoke]      (--smoke: RUNS=1, smaller WAL phases)
#                   PHASES="restore archive" bench/backup.sh   (only those phases of
#                   pgbr pgvigil restore encryption wal-push archive replay, in that order)
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
  exec timeout -k 30 "${BENCH_TIMEOUT:-10800}" bash "$0"
fi

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and runs servers as user postgres)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-3}
WALPUSH_N=${WALPUSH_N:-20}          # hand-run wal-push / archive-push per pass
WAL_SEGMENTS=${WAL_SEGMENTS:-40}    # at least this many segments in the archiver backlog
WALGEN_SECONDS=${WALGEN_SECONDS:-10} # pgbench -T for the WAL generation
if [ "$SMOKE" = 1 ]; then
  QUIET_WAIT=${QUIET_WAIT:-30} QUIET_PHASE_WAIT=${QUIET_PHASE_WAIT:-10}
  BURST_SEGMENTS=${BURST_SEGMENTS:-24} REPLAY_SEGMENTS=${REPLAY_SEGMENTS:-32}
fi
QUIET_ROUND_WAIT=${QUIET_ROUND_WAIT:-60}
RESTORE_PORT=${RESTORE_PORT:-55443}
# pgvigil's [server] listen in the bench configs: wal-push reports each push to
# 127.0.0.1:<this port> (best effort, 200 ms bound); nothing listens here, so the
# report costs a refused connect, as on a host where the daemon is not running.
BK_LISTEN_PORT=${BK_LISTEN_PORT:-59434}
PHASES=${PHASES:-pgbr pgvigil restore encryption wal-push archive replay}

# pgBackRest: "sid" = Debian sid's (2.60; scripts/pgbackrest-sid.sh), "d12" = Debian 12's (2.45)
PGBR_VERSIONS=${PGBR_VERSIONS:-sid d12}
PGBR_PROCESS_MAX=${PGBR_PROCESS_MAX:-$(nproc)}   # backup and restore: process-max = cores

# phase restore: what is restored each round (pgbr_<v> only for the versions in PGBR_VERSIONS)
RESTORE_TOOLS=${RESTORE_TOOLS:-pgvigil pgvigil1 pgvigil_syncfs pgbr_sid pgbr_d12}
ROOM_GB=${ROOM_GB:-10}              # keep this much free on $BENCH_DIR's filesystem (see the README)
RECLAIM_WAIT=${RECLAIM_WAIT:-65}    # s after deleting restored dirs before the next restore
# where each restore goes: "host" = a new directory under $BENCH_DIR (this machine's root
# file system); "volume" = a fresh ext4 file system of its own (mkfs.ext4 defaults, so with
# a journal; a sparse loop image of VOLUME_GB under $BK/volumes), as a restore onto a new
# volume (a new PVC, a new disk) is in a real recovery
RESTORE_FS=${RESTORE_FS:-host}
DROP_CACHES=${DROP_CACHES:-1}        # drop the page cache before every restore (see restore_one)
VOLUME_GB=${VOLUME_GB:-4}

# phase archive
ARCH_VARIANTS=${ARCH_VARIANTS:-pgvigil_ahead pgvigil_plain pgbr_sid_async}
BURST_SEGMENTS=${BURST_SEGMENTS:-120}  # WAL the burst writes (fixed work, calibrated), segments
BURST_CLIENTS=${BURST_CLIENTS:-2}
BURST_ROWS=${BURST_ROWS:-5000}         # rows per pgbench transaction
ARCH_WORKERS=${ARCH_WORKERS:-2}        # [backup] archive_workers of the daemon
ARCH_PITR_CHECK=${ARCH_PITR_CHECK:-10s} # the daemon's pitr.check_interval (sets the archive-age gauge)
ARCH_DRAIN_TIMEOUT=${ARCH_DRAIN_TIMEOUT:-900}
ARCH_PORT=${ARCH_PORT:-59435}          # the daemon's [server] listen (/metrics)
PGBR_ASYNC_PROCESS_MAX=${PGBR_ASYNC_PROCESS_MAX:-2}

# phase replay
REPLAY_SEGMENTS=${REPLAY_SEGMENTS:-300}
REPLAY_VARIANTS=${REPLAY_VARIANTS:-pgvigil_pf8 pgvigil_pf0 s3_pf8 s3_pf0 pgbr_sid_async pgbr_sid_sync}
REPLAY_RUNS=${REPLAY_RUNS:-$RUNS}
ARCH_RUNS=${ARCH_RUNS:-$RUNS}
PGBR_GET_QUEUE_MAX=${PGBR_GET_QUEUE_MAX:-128MiB}  # archive-get-queue-max (its default; 8 segments)
MOTO_PORT=${MOTO_PORT:-59007}
S3_BUCKET=pgvigil-bench

BK=$BENCH_DIR/backup                 # repos, restore dirs, per-run logs
PGV_REPO=$BK/pgvigil-repo
PGV_CONF=$BK/conf/pgvigil-backup.toml
PGV1_CONF=$BK/conf/pgvigil-backup-1stream.toml   # the same repository, [backup] streams = 1
PGV_ENC_REPO=$BK/pgvigil-sealed-repo # phase encryption: the sealed repository
PGV_ENC_CONF=$BK/conf/pgvigil-sealed.toml
PGV_ENC_KEY=$BK/conf/pgvigil-bench.key
WP_REPO=$BK/walpush-repo             # fresh repo for the hand-run wal-push passes
WP_CONF=$BK/conf/pgvigil-walpush.toml
ARCH_REPO=$BK/archive-repo           # phase archive (pgvigil, with and without the daemon)
ARCH_CONF=$BK/conf/pgvigil-archive.toml
RP_REPO=$BK/replay-repo              # phase replay, file:// (wal_prefetch 8 / 0: two configs)
RST=$BK/restore
BB_OUT=$BK/basebackup-out
WALCOPY=$BK/walcopies
PGVIGIL=$BINDIR/pgvigil
PGBR_SID_DIR=$BENCH_DIR/pgbackrest-sid   # a copy the postgres user can run (root's cache is 0700)
declare -A PGBR_BIN=([d12]=/usr/bin/pgbackrest [sid]=$PGBR_SID_DIR/pgbackrest)
declare -A PGBR_VERSION=()
PYTHON=/usr/bin/python3
EXPECTED_ROWS=$((SCALE * 100000))
S3_ENV=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true)

pgbr_dir() { echo "$BK/pgbr-$1"; }
pgbr_conf() { echo "$BK/pgbr-$1/pgbackrest.conf"; }
pgbr_async_conf() { echo "$BK/pgbr-$1/pgbackrest-async.conf"; }
pgbr_cmd() { echo "${PGBR_BIN[$1]} --config=$(pgbr_conf "$1") --stanza=bench"; }
has_pgbr() { [[ " $PGBR_VERSIONS " == *" $1 "* ]]; }
wants() { [[ " $PHASES " == *" $1 "* ]]; }

ms_now() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
ms_since() { echo $(( $(ms_now) - $1 )); }
ms2s() { awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }'; }

# ---------------------------------------------------------------- tools

ensure_tools() {
  local pk=(postgresql-15 postgresql-contrib zstd time curl python3)
  has_pgbr d12 && pk+=(pgbackrest)
  ensure_packages "${pk[@]}"
  local f
  for f in "$PGBIN/pg_basebackup" "$PGBIN/pg_ctl" "$PGBIN/pgbench" /usr/bin/time "$PYTHON"; do
    [ -x "$f" ] || die "$f missing after install"
  done
  mkdir -p "$LOGDIR"
  if has_pgbr sid; then
    timeout 2400 "$REPO_ROOT/scripts/pgbackrest-sid.sh" --install "$PGBR_SID_DIR" >"$LOGDIR/pgbackrest-sid.log" 2>&1 ||
      { tail -n 5 "$LOGDIR/pgbackrest-sid.log" >&2; die "scripts/pgbackrest-sid.sh failed, see $LOGDIR/pgbackrest-sid.log"; }
  fi
  local v
  for v in $PGBR_VERSIONS; do
    [ -n "${PGBR_BIN[$v]:-}" ] || die "PGBR_VERSIONS: unknown $v (sid d12)"
    PGBR_VERSION[$v]=$(timeout 30 "${PGBR_BIN[$v]}" version 2>&1) || die "${PGBR_BIN[$v]} version failed: ${PGBR_VERSION[$v]}"
    PGBR_VERSION[$v]=${PGBR_VERSION[$v]#pgBackRest }
    log "pgBackRest $v: ${PGBR_BIN[$v]} (${PGBR_VERSION[$v]})"
  done
}

# label of a tool in the tables
tool_label() {
  case $1 in
    pgbr_sid | pgbr_d12) echo "pgBackRest ${PGBR_VERSION[${1#pgbr_}]:-?} ($1)" ;;
    *) echo "$1" ;;
  esac
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
  drop_volumes
  rm -rf "${PGV_REPO:?}" "${PGV_ENC_REPO:?}" "${WP_REPO:?}" "${ARCH_REPO:?}" "${RP_REPO:?}" "${BK:?}"/pgbr "${BK:?}"/pgbr-* \
    "${RST:?}" "${BB_OUT:?}" "${WALCOPY:?}" "${BK:?}/home"
  mkdir -p "$PGV_REPO" "$PGV_ENC_REPO" "$WP_REPO" "$ARCH_REPO" "$RP_REPO" "$RST" "$BB_OUT" "$WALCOPY" "$BK/home"
  local v
  for v in $PGBR_VERSIONS; do mkdir -p "$(pgbr_dir "$v")"/{repo,log,lock,spool}; done
  chown postgres:postgres "$BK"
  chown -R postgres:postgres "$PGV_REPO" "$PGV_ENC_REPO" "$WP_REPO" "$ARCH_REPO" "$RP_REPO" "$BK"/pgbr-* "$RST" "$BB_OUT" "$WALCOPY" "$BK/home"
}

# pgvigil_conf FILE URL [EXTRA] : a pgvigil config for the bench cluster (0644)
pgvigil_conf() {
  {
    echo "# written by bench/backup.sh: bench cluster, loopback only"
    printf '[server]\nlisten = "127.0.0.1:%s"\n' "$BK_LISTEN_PORT"
    printf '[postgres]\ndsn = "postgresql://postgres@127.0.0.1:%s/postgres?sslmode=disable"\n' "$PGPORT"
    printf '[storage]\nurl = "%s"\n' "$2"
    [ -z "${3:-}" ] || printf '%s\n' "$3"
  } >"$1"
  chmod 0644 "$1"
}

write_configs() {
  pgvigil_conf "$PGV_CONF" "file://$PGV_REPO"
  pgvigil_conf "$PGV1_CONF" "file://$PGV_REPO" $'[backup]\nstreams = 1'
  pgvigil_conf "$WP_CONF" "file://$WP_REPO"
  # the sealed repository: the same, with a random key in a file only postgres reads
  (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$PGV_ENC_KEY")
  chown postgres:postgres "$PGV_ENC_KEY"
  pgvigil_conf "$PGV_ENC_CONF" "file://$PGV_ENC_REPO" \
    "$(printf '[storage.encryption]\nkey_id = "bench"\nkey_file = "%s"' "$PGV_ENC_KEY")"
  # phase archive: the daemon's config (nothing scheduled; it only archives ahead and
  # serves /metrics); wal-push alone uses the same file with no daemon running
  pgvigil_conf "$ARCH_CONF" "file://$ARCH_REPO" "$(printf '%s\n' '[backup]' 'schedule = "off"' 'archive_ahead = true' \
    "archive_workers = $ARCH_WORKERS" '[pitr]' "check_interval = \"$ARCH_PITR_CHECK\"" 'heartbeat_interval = "0s"' \
    '[drill]' 'schedule = "off"' '[retention]' 'schedule = "off"')"
  sed -i "s|^listen = .*|listen = \"127.0.0.1:$ARCH_PORT\"|" "$ARCH_CONF"
  # phase replay: read-ahead on (8, the default) and off, file:// and S3 (moto)
  local pf s3
  s3=$(printf '[storage.s3]\nregion = "eu-central-1"\nendpoint = "http://127.0.0.1:%s"\nforce_path_style = true' "$MOTO_PORT")
  for pf in 8 0; do
    pgvigil_conf "$BK/conf/pgvigil-replay-pf$pf.toml" "file://$RP_REPO" "$(printf '[backup]\nwal_prefetch = %s' "$pf")"
    pgvigil_conf "$BK/conf/pgvigil-replay-s3-pf$pf.toml" "s3://$S3_BUCKET/replay" "$(printf '[backup]\nwal_prefetch = %s\n%s' "$pf" "$s3")"
  done
  # pgBackRest: the anchors' "best" configuration (bundling, zst), process-max = cores,
  # own paths per version; the async file adds archive-async for archive-push/-get
  local v d conf
  for v in $PGBR_VERSIONS; do
    d=$(pgbr_dir "$v")
    for conf in "$(pgbr_conf "$v")" "$(pgbr_async_conf "$v")"; do
      {
        echo "[global]"
        echo "repo1-type=posix"
        echo "repo1-path=$d/repo"
        echo "repo1-retention-full=2"
        echo "repo1-bundle=y"
        echo "compress-type=zst"
        echo "start-fast=y"
        echo "process-max=$PGBR_PROCESS_MAX"
        echo "log-path=$d/log"
        echo "lock-path=$d/lock"
        echo "spool-path=$d/spool"
        echo "log-level-console=warn"
        echo "log-level-file=info"
        # the processes pgBackRest starts itself (async, local workers) go through the wrapper
        [ "$v" = d12 ] || echo "cmd=${PGBR_BIN[$v]}"
        if [ "$conf" = "$(pgbr_async_conf "$v")" ]; then
          echo "archive-async=y"
          echo "archive-get-queue-max=$PGBR_GET_QUEUE_MAX"
          echo
          echo "[global:archive-push]"
          echo "process-max=$PGBR_ASYNC_PROCESS_MAX"
          echo
          echo "[global:archive-get]"
          echo "process-max=$PGBR_ASYNC_PROCESS_MAX"
        fi
        echo
        echo "[bench]"
        echo "pg1-path=$PGDATA"
        echo "pg1-port=$PGPORT"
        echo "pg1-socket-path=$RUNDIR"
        echo "pg1-user=postgres"
      } >"$conf"
      chown postgres:postgres "$conf"; chmod 0640 "$conf"
    done
  done
}

# pgbr VERSION ARGS... : pgBackRest VERSION on the bench stanza, as postgres, bounded
pgbr() { local v=$1; shift; timeout 600 runuser -u postgres -- "${PGBR_BIN[$v]}" --config="$(pgbr_conf "$v")" --stanza=bench "$@"; }

# pgbr_stanza VERSION [nocheck] : stanza-create (once per run) + check
declare -A PGBR_STANZA_DONE=()
pgbr_stanza() {
  local v=$1
  if [ -z "${PGBR_STANZA_DONE[$v]:-}" ]; then
    pgbr "$v" stanza-create >"$RL/pgbr-$v-stanza-create.out" 2>&1 || { cat "$RL/pgbr-$v-stanza-create.out" >&2; die "pgbackrest $v stanza-create failed"; }
    PGBR_STANZA_DONE[$v]=1
  fi
  # check: archive_command must push to this pgBackRest now (not so in phase wal-push)
  [ "${2:-}" = nocheck ] && return 0
  pgbr "$v" check >"$RL/pgbr-$v-check.out" 2>&1 || { cat "$RL/pgbr-$v-check.out" >&2; die "pgbackrest $v check failed (is its archive-push in archive_command?)"; }
}

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

# the newest pgBackRest backup of VERSION: "label db_bytes repo_bytes"
pgbr_last_backup() {
  pgbr "$1" info --output=json | "$PYTHON" -c '
import json, sys
b = json.load(sys.stdin)[0]["backup"][-1]
print(b["label"], b["info"]["size"], b["info"]["repository"]["size"])' 2>/dev/null || echo "- - -"
}

# the process name of pgBackRest VERSION (sid runs through the sid loader)
pgbr_proc() { [ "$1" = d12 ] && echo pgbackrest || echo ld-linux-x86-64; }

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

# archive_command into every pgBackRest of the run
pgbr_archive_command() {
  local c="" v
  for v in $PGBR_VERSIONS; do c="${c:+$c && }$(pgbr_cmd "$v") archive-push %p"; done
  echo "$c"
}

phase_pgbr() {
  [ -n "$PGBR_VERSIONS" ] || { log "== phase pgbr: PGBR_VERSIONS is empty, skipped"; return 0; }
  log "== phase pgbr: archive_command = pgbackrest archive-push ($PGBR_VERSIONS), $RUNS full backups each"
  set_archive_command "$(pgbr_archive_command)"
  local v i label repo order
  for v in $PGBR_VERSIONS; do pgbr_stanza "$v"; done
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "pgbr round $i" "$QUIET_ROUND_WAIT"
    # alternate which version goes first
    order=$PGBR_VERSIONS; ((i % 2)) || order=$(echo "$PGBR_VERSIONS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for v in $order; do
      sync
      measured "pgbr_$v-$i" 900 "${PGBR_BIN[$v]}" --config="$(pgbr_conf "$v")" --stanza=bench --type=full backup
      read -r label _ repo < <(pgbr_last_backup "$v")
      [ "$M_RC" = 0 ] || { label=- repo=-; echo "pgbackrest $v backup run $i: $(first_error "$RL/pgbr_$v-$i.out")" >>"$RES/errors.txt"; }
      record_backup "pgbr_$v" "$i" "$(pgbr_proc "$v")" "" "$repo" "$label"
      [ "$M_RC" = 0 ] && PGBR_HAS_BACKUP[$v]=1
    done
  done
  for v in $PGBR_VERSIONS; do pgbr "$v" info >"$RES/pgbackrest-$v-info.txt" 2>&1 || true; done
}
declare -A PGBR_HAS_BACKUP=()

# wal_push_check CONF : one switched segment must come out archived through the
# archive_command just set
wal_push_check() {
  local before after seg i
  read -r before _ < <(archiver_stats)
  seg=$(psql_v -d postgres -c "SELECT txid_current()" -c "SELECT pg_walfile_name(pg_switch_wal())" | tail -n1)
  for ((i = 0; i < 600; i++)); do
    read -r after _ < <(archiver_stats)
    ((after > before)) && break
    sleep 0.1
  done
  if ((after <= before)); then
    echo "archive_command ($1): segment $seg not archived within 60 s; pg_stat_archiver: $(archiver_stats); server log: $(grep -E 'archive command failed|pgvigil: |ERROR' "$PGLOG" | tail -n 2 | tr '\n' ' ')" >>"$RES/errors.txt"
    log "archiving is failing: $(tail -n1 "$RES/errors.txt")"
    return 1
  fi
  log "archiver: segment $seg archived ($1)"
}

PGV_ID4="" PGV_ID1=""
phase_pgvigil() {
  log "== phase pgvigil: archive_command = pgvigil wal-push, $RUNS rounds of pg_basebackup + pgvigil backup (streams 4, 1)"
  wait_archived 120 || log "pgBackRest archiver backlog did not drain within 120 s"
  set_archive_command "$PGVIGIL wal-push -c $PGV_CONF %p"
  wal_push_check "pgvigil wal-push" || true
  local id stored i
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "pgvigil round $i" "$QUIET_ROUND_WAIT"
    rm -rf "${BB_OUT:?}"/*; sync
    measured "pg_basebackup-$i" 900 "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres \
      -c fast -D "$BB_OUT/run$i" -Ft -X fetch --compress=client-zstd
    stored=$(du -sb "$BB_OUT/run$i" 2>/dev/null | cut -f1); stored=${stored:--}
    [ "$M_RC" = 0 ] || echo "pg_basebackup run $i: $(first_error "$RL/pg_basebackup-$i.out")" >>"$RES/errors.txt"
    record_backup pg_basebackup "$i" pg_basebackup "" "$stored"
    rm -rf "${BB_OUT:?}"/*; sync

    # streams = 1 first, so the 4-stream backup (the default) is the newest
    pgvigil_backup_run pgvigil1 "$i" "$PGV1_CONF" && PGV_ID1=$LAST_ID
    pgvigil_backup_run pgvigil "$i" "$PGV_CONF" && PGV_ID4=$LAST_ID
  done
  ls -l "$PGV_REPO"/default/backups/ >"$RES/pgvigil-backups-ls.txt" 2>&1 || true
  timeout 60 runuser -u postgres -- "$PGVIGIL" backups -c "$PGV_CONF" >"$RES/pgvigil-backups.txt" 2>&1 || true
}

# pgvigil_backup_run TOOL RUN CONF : one measured `pgvigil backup`, recorded; LAST_ID
pgvigil_backup_run() {
  local tool=$1 i=$2 conf=$3 id stored
  LAST_ID=""
  measured "$tool-$i" 900 "$PGVIGIL" backup -c "$conf"
  read -r id _ stored < <(pgvigil_last_backup)
  if [ "$M_RC" != 0 ]; then
    echo "$tool backup run $i (exit $M_RC): $(grep -m1 '^pgvigil: ' "$RL/$tool-$i.out" || tail -n1 "$RL/$tool-$i.out")" >>"$RES/errors.txt"
    stored=-; id=-
  fi
  record_backup "$tool" "$i" pgvigil pg_basebackup "$stored" "$id"
  [ "$M_RC" = 0 ] && LAST_ID=$id
}

# Phase restore alone (PHASES=restore): the backups the earlier phases would have taken,
# one of each, untimed, with archive_command pushing to every repository.
ensure_restore_backups() {
  local need=0 v
  [ -n "$PGV_ID4" ] && [ -n "$PGV_ID1" ] || need=1
  for v in $PGBR_VERSIONS; do [ -n "${PGBR_HAS_BACKUP[$v]:-}" ] || need=1; done
  ((need)) || return 0
  log "phase restore: taking the backups it needs (untimed)"
  wait_archived 120 || true
  local c; c="$PGVIGIL wal-push -c $PGV_CONF %p"
  [ -z "$PGBR_VERSIONS" ] || c="$c && $(pgbr_archive_command)"
  set_archive_command "$c"
  wal_push_check "pgvigil + pgBackRest" || true
  for v in $PGBR_VERSIONS; do
    [ -z "${PGBR_HAS_BACKUP[$v]:-}" ] || continue
    pgbr_stanza "$v"
    pgbr "$v" --type=full backup >"$RL/setup-pgbr-$v-backup.out" 2>&1 && PGBR_HAS_BACKUP[$v]=1 ||
      echo "setup: pgbackrest $v backup failed: $(first_error "$RL/setup-pgbr-$v-backup.out")" >>"$RES/errors.txt"
  done
  if [ -z "$PGV_ID1" ]; then
    timeout 900 runuser -u postgres -- "$PGVIGIL" backup -c "$PGV1_CONF" >"$RL/setup-pgvigil1-backup.out" 2>&1 &&
      read -r PGV_ID1 _ < <(pgvigil_last_backup) || echo "setup: pgvigil backup (streams 1) failed: $(first_error "$RL/setup-pgvigil1-backup.out")" >>"$RES/errors.txt"
  fi
  if [ -z "$PGV_ID4" ]; then
    timeout 900 runuser -u postgres -- "$PGVIGIL" backup -c "$PGV_CONF" >"$RL/setup-pgvigil-backup.out" 2>&1 &&
      read -r PGV_ID4 _ < <(pgvigil_last_backup) || echo "setup: pgvigil backup failed: $(first_error "$RL/setup-pgvigil-backup.out")" >>"$RES/errors.txt"
  fi
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
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

# restore_spec TAG : what TAG restores. Sets R_KIND (pgvigil | pgbr), R_CONF, R_BACKUP
# (pgvigil: id or latest), R_PGBR (pgBackRest version), R_PGOPTS (extra server options),
# R_S3 (1: the AWS credentials of moto in the environment of the restore and the server).
restore_spec() {
  R_KIND=pgvigil R_CONF=$PGV_CONF R_BACKUP=latest R_PGBR="" R_PGOPTS="" R_S3=0
  case $1 in
    pgvigil) R_BACKUP=${PGV_ID4:-latest} ;;
    pgvigil1) R_BACKUP=${PGV_ID1:-latest} ;;
    pgvigil_syncfs) R_BACKUP=${PGV_ID4:-latest} R_PGOPTS="-c recovery_init_sync_method=syncfs" ;;
    plain) ;;
    sealed) R_CONF=$PGV_ENC_CONF ;;
    pgbr_sid | pgbr_d12) R_KIND=pgbr R_PGBR=${1#pgbr_} R_CONF=$(pgbr_conf "${1#pgbr_}") ;;
    # phase replay: the servers sync the data directory with syncfs, for all alike: the
    # per-file fsync (seconds to a minute here, with the disk's flush latency) is the same
    # for every variant and is not what this phase compares
    pgvigil_pf8 | pgvigil_pf0) R_CONF=$BK/conf/pgvigil-replay-pf${1##*_pf}.toml ;;
    s3_pf8 | s3_pf0) R_CONF=$BK/conf/pgvigil-replay-s3-pf${1##*_pf}.toml R_S3=1 ;;
    pgbr_sid_async | pgbr_d12_async) R_KIND=pgbr R_PGBR=${1#pgbr_} R_PGBR=${R_PGBR%_async} R_CONF=$(pgbr_async_conf "$R_PGBR") ;;
    pgbr_sid_sync | pgbr_d12_sync) R_KIND=pgbr R_PGBR=${1#pgbr_} R_PGBR=${R_PGBR%_sync} R_CONF=$(pgbr_conf "$R_PGBR") ;;
    *) return 1 ;;
  esac
  case $1 in pgvigil_pf* | s3_pf* | pgbr_*_async | pgbr_*_sync) R_PGOPTS="-c recovery_init_sync_method=syncfs" ;; esac
}

# pg_breakdown LOG T0_MS START_MS : where a restored server's time went, from its log
# (log_line_prefix '%m ...', UTC): "start_at boot sync replay endrec ready_rw segs" in s,
#   start_at  pg_ctl start issued, from the start of the restore command (T0)
#   boot      pg_ctl start -> "database system was interrupted" (postmaster up, startup process)
#   sync      -> "starting archive recovery": the startup sync of the data directory
#             (recovery_init_sync_method: fsync of every file, or syncfs)
#   replay    -> "redo done at": WAL fetched by restore_command and replayed
#   endrec    -> "database system is ready to accept connections": end-of-recovery
#             checkpoint, new timeline, promotion
#   ready_rw  "ready to accept connections" from T0;  segs: "restored log file" lines
pg_breakdown() {
  "$PYTHON" - "$@" <<'PY' 2>/dev/null || echo "- - - - - - -"
import datetime, re, sys
log, t0, ts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pat = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (UTC|GMT) ')
keys = [('interrupted', ('database system was interrupted',)),
        ('recovery', ('starting archive recovery', 'starting point-in-time recovery')),
        ('redo_done', ('redo done at',)),
        ('ready_rw', ('database system is ready to accept connections',))]
first, segs = {}, 0
for line in open(log, errors='replace'):
    m = pat.match(line)
    if not m:
        continue
    t = datetime.datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S.%f').replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000
    if 'restored log file' in line:
        segs += 1
    for k, needles in keys:
        if k not in first and any(n in line for n in needles):
            first[k] = t
first['start'] = ts
def d(a, b):
    return '%.3f' % ((first[b] - first[a]) / 1000) if a in first and b in first else '-'
ready = '%.3f' % ((first['ready_rw'] - t0) / 1000) if 'ready_rw' in first else '-'
print('%.3f' % ((ts - t0) / 1000), d('start', 'interrupted'), d('interrupted', 'recovery'),
      d('recovery', 'redo_done'), d('redo_done', 'ready_rw'), ready, segs)
PY
}

# restore_one TAG RUN RUNS_FILE [LIMIT_S] : restore + start + wait (see restore_spec);
# appends "tag run rc restore_s accept_s promoted_s gnu_maxrss_kb main_hwm_kb rows note"
# to RUNS_FILE and "tag run restore_s start_at boot sync replay endrec ready_rw accept
# promoted segs" to RUNS_FILE's -breakdown file. R_CHECK_SQL / R_CHECK_EXPECT: an extra
# check on the restored server (database postgres).
R_CHECK_SQL="" R_CHECK_EXPECT=""
restore_one() {
  # A new directory per run, and nothing deleted right before a restore: this ext4 has no
  # journal, and then ext4 skips inodes freed in the last 60 s (300 s more while the inode
  # table block is dirty) when it allocates new ones (recently_deleted()), which made a
  # restore right after an `rm -rf` of the previous one up to 3x slower (see room_for).
  local tag=$1 i=$2 runs=$3 limit=${4:-600} data=$RST/$1-$2 acc=- pro=- rows=- note=- proc=pgvigil
  restore_spec "$tag" || die "restore_one: unknown restore $tag"
  if [ "$RESTORE_FS" = volume ]; then
    new_volume "$RST/$tag-$i" || { echo "$tag restore run $i: no volume: $VOLUME_NOTE" >>"$RES/errors.txt"; return 1; }
    data=$RST/$tag-$i/data
  fi
  [ "$R_KIND" = pgbr ] && proc=$(pgbr_proc "$R_PGBR")
  local envs=()
  [ "$R_S3" = 1 ] && envs=(/usr/bin/env "${S3_ENV[@]}")
  stop_restored
  sync
  # The page cache dropped before every restore (DROP_CACHES=1): on this VM, page cache
  # that grows into memory the guest has not touched yet (or gave back to the host through
  # the balloon's free page reporting) makes writing it slow, and a restore writes 1.1 GB
  # through it: measured by hand, the same restore took 2.2, 2.4 and then 8.4 s (7.2 s in
  # the kernel, a third of it copying into new page cache), and 2.2-2.4 s each time with
  # the cache dropped first. Which tool met that depended on the order.
  if [ "$DROP_CACHES" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
  if port_open "$RESTORE_PORT"; then
    echo "$tag restore run $i: port $RESTORE_PORT already in use" >>"$RES/errors.txt"; return 1
  fi
  case $R_KIND in
    pgvigil)
      # pgvigil creates the directory itself (it must be missing or empty)
      measured "restore-$tag-$i" 900 "${envs[@]}" "$PGVIGIL" restore -c "$R_CONF" --to "$data" --backup "$R_BACKUP" ;;
    pgbr)
      mkdir -p "$data"; chmod 700 "$data"; chown postgres:postgres "$data"
      measured "restore-$tag-$i" 900 "${PGBR_BIN[$R_PGBR]}" --config="$R_CONF" --stanza=bench \
        --pg1-path="$data" --archive-mode=off restore ;;
  esac
  local t0=$M_T0 rs ts bd="- - - - - - -"; rs=$(ms2s "$M_MS")
  if [ "$M_RC" != 0 ]; then
    echo "$tag restore run $i (exit $M_RC): $(grep -m1 -E '^pgvigil: |ERROR' "$RL/restore-$tag-$i.out" || tail -n1 "$RL/restore-$tag-$i.out")" >>"$RES/errors.txt"
    note=restore-failed
  else
    RESTORED_DATA=$data
    # archive_mode=off: a restored copy must never archive into the repositories
    ts=$(ms_now)
    timeout 60 runuser -u postgres -- env "${envs[@]:1}" "$PGBIN/pg_ctl" -D "$data" -l "$RL/pg-restored-$tag-$i.log" \
      -o "-p $RESTORE_PORT -c archive_mode=off -c listen_addresses=127.0.0.1 $R_PGOPTS" start >/dev/null 2>&1 || true
    if wait_until "$limit" restored_ready; then
      acc=$(ms2s "$(ms_since "$t0")")
      if wait_until "$limit" restored_promoted; then
        pro=$(ms2s "$(ms_since "$t0")")
      else
        note=not-promoted-in-${limit}s
        echo "$tag restore run $i: not promoted within $limit s; log: $(tail -n 3 "$RL/pg-restored-$tag-$i.log" | tr '\n' ' ')" >>"$RES/errors.txt"
      fi
      rows=$(timeout 120 runuser -u postgres -- "$PGBIN/psql" -X -h 127.0.0.1 -p "$RESTORE_PORT" -U postgres \
        -d bench -At -c 'SELECT count(*) FROM pgbench_accounts' 2>>"$RL/restore-$tag-$i.out") || rows=error
      [ "$rows" = "$EXPECTED_ROWS" ] || {
        note="rows-mismatch"
        echo "$tag restore run $i: pgbench_accounts has $rows rows, expected $EXPECTED_ROWS" >>"$RES/errors.txt"
      }
      if [ -n "$R_CHECK_SQL" ]; then
        local got
        got=$(timeout 120 runuser -u postgres -- "$PGBIN/psql" -X -h 127.0.0.1 -p "$RESTORE_PORT" -U postgres \
          -d postgres -At -c "$R_CHECK_SQL" 2>>"$RL/restore-$tag-$i.out") || got=error
        [ "$got" = "$R_CHECK_EXPECT" ] || {
          note="check-failed"
          echo "$tag restore run $i: '$R_CHECK_SQL' gave '$got', expected '$R_CHECK_EXPECT' (not replayed to the end?)" >>"$RES/errors.txt"
        }
      fi
    else
      note=not-accepting-in-${limit}s
      echo "$tag restore run $i: restored cluster did not accept connections within $limit s; log: $(tail -n 3 "$RL/pg-restored-$tag-$i.log" | tr '\n' ' ')" >>"$RES/errors.txt"
    fi
    # recovery facts from the restored server's log, and the split of its time
    grep -E 'redo done|archive recovery complete|selected new timeline' "$RL/pg-restored-$tag-$i.log" \
      | sed "s/^/[$tag-$i] /" >>"$RES/restore-recovery.log" 2>/dev/null || true
    stop_restored
    bd=$(pg_breakdown "$RL/pg-restored-$tag-$i.log" "$t0" "$ts")
    [ "$R_KIND" != pgvigil ] || reap_prefetchers "$data"
  fi
  echo "$tag $i $M_RC $rs $acc $pro ${M_GNU_RSS:--} $(hwm_of "$RL/restore-$tag-$i.hwm" "$proc") $rows $note" \
    | tee -a "$runs" >&2
  set -- $bd
  echo "$tag $i $rs $1 $2 $3 $4 $5 $6 $acc $pro $7" >>"${runs%.runs}-breakdown.runs"
  stop_restored
}

# reap_prefetchers DIR... : a `pgvigil wal-prefetch` still holding the spool lock of a
# restored directory DIR (found by the lock file it holds open, and checked to be our
# binary running in DIR, where PostgreSQL ran its restore_command) is left alone while it
# idles (it stops by itself 20 s after recovery stopped asking); one that burns more than
# 20 % of a core over a second is spinning (see the README, "pgvigil findings") and is
# stopped by pid, and that is recorded as an error
reap_prefetchers() {
  local d p pids t0 t1
  for d in "$@"; do
    pids=$(spool_holders "$d")
    for p in $pids; do
      [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$d" ] || continue
      [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$PGVIGIL" ] || continue
      t0=$(cpu_ticks "$p" 2>/dev/null) || continue
      sleep 1
      t1=$(cpu_ticks "$p" 2>/dev/null) || continue
      if ((t1 - t0 > CLK_TCK / 5)); then
        [ -z "${RES:-}" ] || echo "wal-prefetch (pid $p) in ${d##*/} spins after recovery ended: $(((t1 - t0) * 100 / CLK_TCK)) % of a core; stopped by the bench" >>"$RES/errors.txt"
        log "stopping a spinning wal-prefetch, pid $p (${d##*/})"
        stop_pid "$p"
      fi
    done
  done
}

# spool_holders DIR : pids holding DIR's read-ahead spool lock open
spool_holders() {
  local lock=$1/pg_wal/pgvigil-prefetch/lock
  [ -e "$lock" ] || return 0
  find /proc/[0-9]*/fd -lname "$lock" 2>/dev/null | cut -d/ -f3 | sort -u || true
}

# wait_spools_gone DIR... : pgvigil's WAL read-ahead (`wal-prefetch`, started by wal-fetch in
# a process group of its own) stops by itself 20 s after recovery stopped asking and removes
# its spool; wait for that (bounded) before a restored directory is deleted. A spool nobody
# holds any more (a prefetcher stopped by reap_prefetchers) does not count.
wait_spools_gone() {
  local i d p left
  reap_prefetchers "$@"
  for ((i = 0; i < 60; i++)); do
    left=0
    for d in "$@"; do [ -z "$(spool_holders "$d")" ] || left=1; done
    ((left)) || return 0
    sleep 0.5
  done
  # still there 30 s on (and at least that long after its server stopped): stuck
  for d in "$@"; do
    for p in $(spool_holders "$d"); do
      [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$d" ] || continue
      [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$PGVIGIL" ] || continue
      [ -z "${RES:-}" ] || echo "wal-prefetch (pid $p) in ${d##*/} still runs 30 s after its server stopped; stopped by the bench" >>"$RES/errors.txt"
      log "stopping a wal-prefetch that did not stop by itself, pid $p (${d##*/})"
      stop_pid "$p"
    done
  done
}

# new_volume DIR : a fresh ext4 file system (a sparse image of VOLUME_GB on a loop device,
# mkfs.ext4 defaults) mounted on DIR (RESTORE_FS=volume); the restore goes to DIR/data. On failure
# sets VOLUME_NOTE.
new_volume() {
  local img=$BK/volumes/${1##*/}.img
  VOLUME_NOTE=
  mkdir -p "$BK/volumes" "$1"
  rm -f "$img"
  truncate -s "${VOLUME_GB}G" "$img" || { VOLUME_NOTE="truncate $img failed"; return 1; }
  timeout 120 mkfs.ext4 -q -F "$img" >"$RL/mkfs-${1##*/}.out" 2>&1 || { VOLUME_NOTE="mkfs.ext4 $img failed"; return 1; }
  # direct I/O: the loop device writes through to the disk as a block device does, rather
  # than into the page cache of its image file
  local dev
  dev=$(timeout 60 losetup --find --show --direct-io=on "$img") || { VOLUME_NOTE="losetup $img failed"; return 1; }
  timeout 60 mount "$dev" "$1" || { losetup -d "$dev"; VOLUME_NOTE="mount $dev ($img) on $1 failed"; return 1; }
  chown postgres:postgres "$1"
}

# restored_dirs : the data directories of every restore so far (a volume's is DIR/data)
restored_dirs() {
  local d
  shopt -s nullglob
  for d in "$RST"/*; do
    if mountpoint -q "$d"; then [ ! -d "$d/data" ] || echo "$d/data"; else echo "$d"; fi
  done
  shopt -u nullglob
}

# drop_volumes : unmount the restore volumes and delete their images
drop_volumes() {
  local d img dev
  shopt -s nullglob
  for d in "$RST"/*; do
    mountpoint -q "$d" || continue
    timeout 120 umount "$d" || timeout 60 umount -l "$d" || log "could not unmount $d"
  done
  for img in "$BK"/volumes/*.img; do
    for dev in $(losetup -n -O NAME -j "$img" 2>/dev/null); do
      timeout 60 losetup -d "$dev" || log "could not detach $dev ($img)"
    done
    rm -f "$img"
  done
  shopt -u nullglob
}

# free_restores : delete every restored directory (read-ahead spools gone first)
free_restores() {
  local -a dirs
  mapfile -t dirs < <(restored_dirs)
  [ ${#dirs[@]} -gt 0 ] || return 0
  wait_spools_gone "${dirs[@]}"
  drop_volumes
  rm -rf "$RST"/* || { sleep 1; rm -rf "$RST"/*; } || log "could not remove every restored directory"
  sync
}

# room_for GB : when $RST's filesystem has less than GB + ROOM_GB free, delete the
# restored directories, then wait RECLAIM_WAIT s (ext4 without a journal skips freshly
# freed inodes, see restore_one); noted in quiet.txt
room_for() {
  local avail
  avail=$(df -BG --output=avail "$RST" | tail -n1 | tr -dc 0-9)
  ((avail >= $1 + ROOM_GB)) && return 0
  log "only ${avail} GB free: deleting the restored directories, then waiting ${RECLAIM_WAIT}s"
  free_restores
  echo "restored directories deleted (only ${avail} GB free), then ${RECLAIM_WAIT}s waited before the next restore" >>"$RES/quiet.txt"
  sleep "$RECLAIM_WAIT"
}

phase_restore() {
  local tools=() t i j n order
  for t in $RESTORE_TOOLS; do
    case $t in pgbr_*) has_pgbr "${t#pgbr_}" || continue ;; esac
    tools+=("$t")
  done
  n=${#tools[@]}
  ((n > 0)) || { log "== phase restore: nothing to restore (RESTORE_TOOLS)"; return 0; }
  ensure_restore_backups
  log "== phase restore: $RUNS rounds of ${tools[*]} (restore + start until accepting / promoted)"
  for ((i = 1; i <= RUNS; i++)); do
    ((i == 1)) || wait_quiet "restore round $i" "$QUIET_ROUND_WAIT"
    room_for $((n * 2))
    # each round starts with the next tool, so none always runs first
    for ((j = 0; j < n; j++)); do
      t=${tools[$(((j + i - 1) % n))]}
      restore_one "$t" "$i" "$RES/restore.runs" || true
    done
  done
  restored_dirs | xargs -r du -sb >"$RES/restore-du.txt" 2>/dev/null || true
  free_restores
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
      restore_one "$kind" "$i" "$RES/encryption-restore.runs" || true
    done
  done
  free_restores
  # what the sealed repository holds really is ciphertext
  local base; base=$(find "$PGV_ENC_REPO/default/backups" -name 'base*.tar.zst' | head -n1)
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
    pgbr_*) cmd="$(pgbr_cmd "${tool#pgbr_}") archive-push" ;;
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
    local v
    for v in $PGBR_VERSIONS; do
      pgbr_stanza "$v" nocheck
      hand_push_pass "pgbr_$v" fresh
      hand_push_pass "pgbr_$v" again
    done
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
  local -a dirs
  mapfile -t dirs < <(restored_dirs)
  [ ${#dirs[@]} -eq 0 ] || reap_prefetchers "${dirs[@]}"
  drop_volumes
  if [ "$CLUSTER_TOUCHED" = 1 ] && pg_running; then
    # leave the cluster as scrape.sh expects it: no archiving
    psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_walgen" -c "DROP TABLE IF EXISTS pgvigil_bench_burst" \
      -c "DROP TABLE IF EXISTS pgvigil_bench_replay" -c "DROP TABLE IF EXISTS pgvigil_bench_replay_mark" \
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
    local v
    for v in $PGBR_VERSIONS; do echo "pgbackrest $v: ${PGBR_VERSION[$v]} (${PGBR_BIN[$v]})"; done
    [ ! -f "$PGBR_SID_DIR/VERSION" ] || echo "pgbackrest sid from: $(cat "$PGBR_SID_DIR/VERSION"), scripts/pgbackrest-sid.sh"
    echo "pgvigil: $("$PGVIGIL" --version 2>&1 | head -n1) ($PGVIGIL_SRC, copied to $PGVIGIL)"
    echo "repo: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' +uncommitted changes')"
    echo "cluster: $(cat "$BENCH_DIR/pg15/setup-done")"
    echo "databases: $(psql_v -d postgres -c "SELECT string_agg(datname || '=' || pg_size_pretty(pg_database_size(datname)), ' ' ORDER BY datname) FROM pg_database")"
    echo "cluster_total_bytes: $(psql_v -d postgres -c 'SELECT sum(pg_database_size(datname)) FROM pg_database')"
    echo "pgdata_files: $(find "$PGDATA" -path "$PGDATA/pg_wal" -prune -o -type f -print | wc -l) (pg_wal left out)"
    echo "pgdata_du_bytes_without_pg_wal: $(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)"
    echo "phases: $PHASES"
    echo "runs: $RUNS  walpush_n: $WALPUSH_N  archive runs: $ARCH_RUNS  replay runs: $REPLAY_RUNS"
    echo "pgbackrest process-max: $PGBR_PROCESS_MAX (backup, restore); async archive-push/-get: $PGBR_ASYNC_PROCESS_MAX"
    echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "other work at the start: $(busy_others)"
    echo "busiest processes before (pcpu since start):"
    ps -eo pcpu=,comm= --sort=-pcpu | head -n 5 | sed 's/^/  /'
  } >"$RES/context.txt"
}

# bst FILE TAG COL : "median (min–max, n)" of column COL for TAG rows where it is not "-"
bst() {
  awk -v t="$2" -v c="$3" '$1 == t && $c != "-" {print $c}' "$1" | stats |
    awk '{ if ($1 == 0) print "n/a"; else printf "%s (%s–%s, n=%s)\n", $3, $2, $4, $1 }'
}
bmed() { awk -v t="$2" -v c="$3" '$1 == t && $c != "-" {print $c}' "$1" | stats | awk '{print ($1 == 0) ? "n/a" : $3}'; }
# the same for start -> promoted (promoted - start_at) of a breakdown file
sp_rows() { awk -v t="$2" '$1 == t && $11 != "-" && $4 != "-" {printf "%.3f\n", $11 - $4}' "$1"; }
spst() { sp_rows "$@" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%s (%s–%s, n=%s)\n", $3, $2, $4, $1 }'; }
spmed() { sp_rows "$@" | stats | awk '{print ($1 == 0) ? "n/a" : $3}'; }
ratio_line() { printf '  %-58s %-8s %s\n' "$1" "$2" "${3:-}"; }

summary() {
  local f=$RES/summary.txt b=$RES/backup.runs r=$RES/restore.runs w=$RES/walpush.runs
  local rb=$RES/restore-breakdown.runs ar=$RES/archive.runs rp=$RES/replay.runs rpb=$RES/replay-breakdown.runs
  local t v rss_own rss_tree
  rss_own=$(awk '$1 == "pgvigil" && $3 == 0 && $6 != "-" {print $6}' "$b" | sort -g | tail -n1)
  rss_tree=$(awk '$1 == "pgvigil" && $3 == 0 && $8 != "-" {print $8}' "$b" | sort -g | tail -n1)
  {
    echo "# pgvigil backup bench — $(date -u +%FT%TZ) — RUNS=$RUNS"
    sed 's/^/# /' "$RES/context.txt"
    echo
    if [ -s "$b" ]; then
      echo "## backup (wall s and MB: median (min–max, n); rc != 0 runs left out)"
      printf '%-50s %-26s %-20s %-20s %-20s %-20s %s\n' "tool" "wall s" "GNU time maxRSS MB" "main proc peak MB" "child peak MB" "tree peak sum MB" "stored MB"
      local label child
      for t in pgvigil pgvigil1 $(for v in $PGBR_VERSIONS; do echo "pgbr_$v"; done) pg_basebackup; do
        grep -q "^$t " "$b" || continue
        case $t in
          pgvigil) label="pgvigil backup (streams 4, zstd -3)"; child="pg_basebackup" ;;
          pgvigil1) label="pgvigil backup (streams 1)"; child="pg_basebackup" ;;
          pgbr_*) label="$(tool_label "$t") full, zst, pm$PGBR_PROCESS_MAX, bundle"; child="" ;;
          pg_basebackup) label="pg_basebackup -Ft -X fetch client-zstd"; child="" ;;
        esac
        printf '%-50s %-26s %-20s %-20s %-20s %-20s %s\n' "$label" "$(st "$b" "$t" 4)" "$(stmb "$b" "$t" 5)" \
          "$(stmb "$b" "$t" 6)" "$([ -n "$child" ] && stmb "$b" "$t" 7 || echo -)" "$(stmb "$b" "$t" 8)" \
          "$(awk -v t="$t" '$1 == t && $3 == 0 && $9 != "-" {print $9 / 1048576}' "$b" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f", $3 }')"
      done
      echo "(GNU time's maxRSS is the largest single process of the tree — for pgvigil that can be the"
      echo " pg_basebackup it spawns; 'main proc' = the sampler's VmHWM of pgvigil / pgbackrest (largest of"
      echo " its processes) / pg_basebackup itself; 'tree peak sum' = highest sum of VmRSS over the tree, 100 ms samples)"
      echo
    fi
    if [ -s "$r" ]; then
      echo "## restore + start on port $RESTORE_PORT (s from the start of the restore command)"
      if [ "$RESTORE_FS" = volume ]; then
        echo "(RESTORE_FS=volume: each restore onto a fresh ext4 of ${VOLUME_GB} GB, mkfs.ext4 defaults, loop device with direct I/O)"
      else
        echo "(RESTORE_FS=host: each restore into a new directory on \$BENCH_DIR's file system)"
      fi
      printf '%-44s %-24s %-24s %-24s %-12s %-12s %s\n' "tool" "restore cmd s" "until accepting s" "until promoted s" "maxRSS MB" "main peak MB" "pgbench_accounts"
      for t in $RESTORE_TOOLS; do
        grep -q "^$t " "$r" || continue
        case $t in
          pgvigil) label="pgvigil restore, 4 streams" ;;
          pgvigil1) label="pgvigil restore, 1 stream" ;;
          pgvigil_syncfs) label="pgvigil, 4 streams, server with syncfs" ;;
          *) label="$(tool_label "$t") pm$PGBR_PROCESS_MAX" ;;
        esac
        printf '%-44s %-24s %-24s %-24s %-12s %-12s %s\n' "$label" \
          "$(st "$r" "$t" 4)" "$(st "$r" "$t" 5)" "$(st "$r" "$t" 6)" "$(stmb "$r" "$t" 7)" "$(stmb "$r" "$t" 8)" \
          "$(awk -v t="$t" '$1 == t {print $9}' "$r" | sort -u | tr '\n' ' ')"
      done
      echo
      echo "### where the time goes (median s; from the restored server's log, see the README)"
      printf '%-16s %-10s %-10s %-8s %-10s %-10s %-10s %-10s %-10s %s\n' "tool" "restore" "start at" "boot" "sync" "replay" "end rec" "ready rw" "promoted" "segments"
      for t in $RESTORE_TOOLS; do
        grep -q "^$t " "$rb" 2>/dev/null || continue
        printf '%-16s %-10s %-10s %-8s %-10s %-10s %-10s %-10s %-10s %s\n' "$t" "$(bmed "$rb" "$t" 3)" "$(bmed "$rb" "$t" 4)" \
          "$(bmed "$rb" "$t" 5)" "$(bmed "$rb" "$t" 6)" "$(bmed "$rb" "$t" 7)" "$(bmed "$rb" "$t" 8)" "$(bmed "$rb" "$t" 9)" \
          "$(bmed "$rb" "$t" 11)" "$(bmed "$rb" "$t" 12)"
      done
      echo "(restore = the restore command; start at = pg_ctl start issued; boot = until the startup process"
      echo " logs 'database system was interrupted'; sync = until 'starting archive recovery' (the fsync of"
      echo " every file of the data directory, recovery_init_sync_method); replay = until 'redo done' (WAL"
      echo " fetched and replayed); end rec = until 'ready to accept connections' (end-of-recovery"
      echo " checkpoint, new timeline); ready rw / promoted: from the start of the restore command)"
      echo
    fi
    if [ -s "$RES/encryption-backup.runs" ]; then
      local eb=$RES/encryption-backup.runs er=$RES/encryption-restore.runs
      echo "## encryption: pgvigil plain vs sealed ([storage.encryption], XChaCha20-Poly1305), same run"
      printf '%-10s %-26s %-26s %-26s %-26s %s\n' "repo" "backup wall s" "restore cmd s" "until accepting s" "until promoted s" "stored MB"
      for t in plain sealed; do
        printf '%-10s %-26s %-26s %-26s %-26s %s\n' "$t" "$(st "$eb" "$t" 4)" "$(st "$er" "$t" 4)" "$(st "$er" "$t" 5)" "$(st "$er" "$t" 6)" \
          "$(awk -v t="$t" '$1 == t && $3 == 0 && $6 != "-" {print $6 / 1048576}' "$eb" | stats | awk '{ if ($1 == 0) print "n/a"; else printf "%.1f", $3 }')"
      done
      ratio_line "sealed / plain backup wall" "$(div "$(med "$eb" sealed 4)" "$(med "$eb" plain 4)" %.3f)"
      ratio_line "sealed / plain restore command" "$(div "$(med "$er" sealed 4)" "$(med "$er" plain 4)" %.3f)"
      ratio_line "sealed / plain restore until accepting" "$(div "$(med "$er" sealed 5)" "$(med "$er" plain 5)" %.3f)"
      echo
    fi
    if [ -s "$RES/walpush-archiver.txt" ] || [ -s "$w" ]; then
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
        for tool in pgvigil $(for v in $PGBR_VERSIONS; do echo "pgbr_$v"; done); do
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
    fi
    if [ -s "$ar" ]; then
      echo "## archive: a write burst of ~$BURST_SEGMENTS segments (pgbench, $BURST_CLIENTS clients x $(awk '$1 == "burst_tx_per_client" {print $2}' "$RES/archive-settings.txt") tx of $BURST_ROWS rows), medians"
      printf '%-16s %-8s %-9s %-9s %-10s %-9s %-9s %-8s %-10s %-10s %-10s %-11s %-11s %-12s %-8s %s\n' "variant" "burst s" "produced" "archived" "segs/s in" "ready at" "lag MB" "drain s" "segs/s all" "max oldest" "max age" "max pgvigil" "wal-push" "daemon CPU" "busy %" "n"
      printf '%-16s %-8s %-9s %-9s %-10s %-9s %-9s %-8s %-10s %-10s %-10s %-11s %-11s %-12s %-8s %s\n' "" "" "segments" "in burst" "burst" "end" "at end" "" "" ".ready s" "archiver s" "age s" "own/stored" "s" "host" ""
      for v in $ARCH_VARIANTS; do
        grep -q "^$v " "$ar" || continue
        printf '%-16s %-8s %-9s %-9s %-10s %-9s %-9s %-8s %-10s %-10s %-10s %-11s %-11s %-12s %-8s %s\n' "$v" \
          "$(bmed "$ar" "$v" 3)" "$(bmed "$ar" "$v" 4)" "$(bmed "$ar" "$v" 5)" "$(bmed "$ar" "$v" 6)" "$(bmed "$ar" "$v" 7)" \
          "$(bmed "$ar" "$v" 9)" "$(bmed "$ar" "$v" 11)" "$(bmed "$ar" "$v" 13)" "$(bmed "$ar" "$v" 14)" "$(bmed "$ar" "$v" 15)" \
          "$(bmed "$ar" "$v" 16)" "$(bmed "$ar" "$v" 18)/$(bmed "$ar" "$v" 19)" "$(bmed "$ar" "$v" 20)" "$(bmed "$ar" "$v" 21)" \
          "$(awk -v t="$v" '$1 == t' "$ar" | wc -l)$(awk -v t="$v" '$1 == t && $22 != "" && $22 != "-" {a += $22; b += $23; n++} END {if (n) printf "; daemon pushed %d, found %d stored (sum)", a, b}' "$ar")"
      done
      echo "(segs/s in burst = archived_count delta during the burst / its wall time; ready at end = .ready files"
      echo " when pgbench ended; lag MB = current LSN - end of the last archived segment then; drain = until no"
      echo " .ready is left; segs/s all = everything archived / (burst + drain); max oldest .ready = the oldest"
      echo " unarchived segment's age, sampled every second (what a crash would lose); max age archiver = now -"
      echo " pg_stat_archiver.last_archived_time and max pgvigil age = pgvigil_wal_archive_age_seconds from the"
      echo " daemon's /metrics (set by its PITR check every $ARCH_PITR_CHECK): the first from the burst's first archived segment"
      echo " on, the gauge from one check interval after the burst started on (earlier samples show the idle time before it);"
      echo " wal-push own/stored = wal-push runs that pushed"
      echo " the segment themselves / found it already stored by the daemon; daemon pushed / found stored: its own"
      echo " rounds, summed over the runs)"
      echo
    fi
    if [ -s "$rp" ]; then
      echo "## replay: restore to the end of the archive, $(awk '$1 == "segments_generated" {print $2}' "$RES/replay-settings.txt") segments of WAL after the backup"
      printf '%-16s %-26s %-26s %-26s %-10s %s\n' "variant" "restore cmd s" "start -> promoted s" "replay (log) s" "segments" "ms/segment"
      for v in $REPLAY_VARIANTS; do
        grep -q "^$v " "$rpb" 2>/dev/null || continue
        printf '%-16s %-26s %-26s %-26s %-10s %s\n' "$v" "$(bst "$rpb" "$v" 3)" "$(spst "$rpb" "$v")" "$(bst "$rpb" "$v" 7)" \
          "$(bmed "$rpb" "$v" 12)" "$(div "$(bmed "$rpb" "$v" 7)" "$(bmed "$rpb" "$v" 12)" %.4f | awk '{ if ($1 == "n/a") print; else printf "%.1f\n", $1 * 1000 }')"
      done
      echo "(pgvigil_pf8/pf0: file:// repository, [backup] wal_prefetch = 8 / 0; s3_*: the same on S3 (moto_server on"
      echo " 127.0.0.1); pgbr_sid_async: pgBackRest archive-get with archive-async=y, archive-get-queue-max=$PGBR_GET_QUEUE_MAX,"
      echo " process-max $PGBR_ASYNC_PROCESS_MAX; pgbr_sid_sync: one archive-get per segment. start -> promoted: pg_ctl start"
      echo " until pg_is_in_recovery() is false; replay (log): 'starting archive recovery' to 'redo done')"
      echo
    fi
    echo "## ratios and targets (medians)"
    local pv pb q pva pb2 c
    if [ -s "$b" ]; then
      pv=$(med "$b" pgvigil 4)
      for v in $PGBR_VERSIONS; do
        q=$(div "$pv" "$(med "$b" "pgbr_$v" 4)" %.3f)
        ratio_line "pgvigil backup / $(tool_label "pgbr_$v")" "$q" "$([ "$v" = sid ] && echo "target <= 0.5: $(verdict "$q" 0.5)")"
      done
      q=$(div "$pv" "$(med "$b" pg_basebackup 4)" %.3f); ratio_line "pgvigil backup / pg_basebackup" "$q" "target <= 1.3: $(verdict "$q" 1.3)"
      ratio_line "pgvigil backup streams 4 / streams 1" "$(div "$pv" "$(med "$b" pgvigil1 4)" %.3f)"
      ratio_line "pgvigil backup peak RSS, own process (MB)" "$(kb2mb "${rss_own:-n/a}")" "target < 100: $(verdict "$(kb2mb "${rss_own:-n/a}")" 99.99)"
      ratio_line "  pgvigil + pg_basebackup, peak sum (MB)" "$(kb2mb "${rss_tree:-n/a}")"
    fi
    if [ -s "$r" ]; then
      local rr=$r
      for v in $PGBR_VERSIONS; do
        pb=$(div "$(med "$rr" pgvigil 5)" "$(med "$rr" "pgbr_$v" 5)" %.3f)
        ratio_line "pgvigil restore / $(tool_label "pgbr_$v"), until accepting" "$pb" "$([ "$v" = sid ] && echo "target <= 1/3: $(verdict "$pb" 0.33334)")"
        ratio_line "  until promoted" "$(div "$(med "$rr" pgvigil 6)" "$(med "$rr" "pgbr_$v" 6)" %.3f)"
      done
      ratio_line "pgvigil restore command, 4 streams / 1 stream" "$(div "$(med "$rr" pgvigil 4)" "$(med "$rr" pgvigil1 4)" %.3f)"
      ratio_line "pgvigil until accepting, 4 streams / 1 stream" "$(div "$(med "$rr" pgvigil 5)" "$(med "$rr" pgvigil1 5)" %.3f)"
      ratio_line "pgvigil until accepting, server syncfs / fsync" "$(div "$(med "$rr" pgvigil_syncfs 5)" "$(med "$rr" pgvigil 5)" %.3f)"
    fi
    if [ -s "$ar" ]; then
      for v in $PGBR_VERSIONS; do
        grep -q "^pgbr_${v}_async " "$ar" || continue
        pb2=$(bmed "$ar" "pgbr_${v}_async" 6)
        for c in pgvigil_ahead pgvigil_plain; do
          grep -q "^$c " "$ar" || continue
          q=$(div "$(bmed "$ar" "$c" 6)" "$pb2" %.3f)
          ratio_line "archive segs/s in burst, $c / pgbr_${v}_async" "$q" "$([ "$c" = pgvigil_ahead ] && echo "target >= 1: $(awk -v r="$q" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 >= 1) print "met"; else print "NOT met" }')")"
          ratio_line "  segs/s burst + drain" "$(div "$(bmed "$ar" "$c" 13)" "$(bmed "$ar" "pgbr_${v}_async" 13)" %.3f)"
        done
      done
      if grep -q "^pgvigil_ahead " "$ar"; then
        pva=$(awk '$1 == "pgvigil_ahead" && $16 != "-" {if ($16 + 0 > m) m = $16 + 0; n++} END {if (n) print m; else print "n/a"}' "$ar")
        ratio_line "max pgvigil_wal_archive_age_seconds in the burst (s)" "$pva" "target < pitr.rpo 300: $(verdict "$pva" 299.99)"
        pva=$(awk '$1 == "pgvigil_ahead" {if ($14 + 0 > m) m = $14 + 0} END {print m + 0}' "$ar")
        ratio_line "max age of the oldest unarchived segment, ahead (s)" "$pva" "vs pitr.rpo 300: $(verdict "$pva" 299.99)"
      fi
    fi
    if [ -s "$rpb" ]; then
      ratio_line "replay start->promoted, file://, prefetch 8 / 0" "$(div "$(spmed "$rpb" pgvigil_pf8)" "$(spmed "$rpb" pgvigil_pf0)" %.3f)"
      ratio_line "replay start->promoted, S3 (moto), prefetch 8 / 0" "$(div "$(spmed "$rpb" s3_pf8)" "$(spmed "$rpb" s3_pf0)" %.3f)"
      for v in $PGBR_VERSIONS; do
        grep -q "^pgbr_${v}_async " "$rpb" || continue
        ratio_line "replay start->promoted, pgvigil_pf8 / pgbr_${v}_async" "$(div "$(spmed "$rpb" pgvigil_pf8)" "$(spmed "$rpb" "pgbr_${v}_async")" %.3f)"
      done
    fi
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
    echo "total: $(since "$T_TOTAL") s; raw: *.runs, archive-*.samples, *-settings.txt; logs: $RL"
  } >"$f"
  cat "$f"
}

# phases archive and replay
# shellcheck source=bench/backup-wal.sh
source "$BENCH_SRC/backup-wal.sh"

# ---------------------------------------------------------------- main

main() {
  T_TOTAL=$(now)
  trap cleanup EXIT
  trap 'exit 143' INT TERM HUP
  # name the command when `set -e` stops the run
  set -E
  trap 'log "stopped by a failing command at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
  local phase
  for phase in $PHASES; do
    case $phase in pgbr | pgvigil | restore | encryption | wal-push | archive | replay) ;; *) die "PHASES: unknown phase $phase" ;; esac
  done
  ensure_tools
  prepare_dirs
  local stamp; stamp=$(date -u +%Y%m%dT%H%M%SZ)
  [ "$SMOKE" = 1 ] && stamp=$stamp-smoke
  RES=$BENCH_DIR/results-backup/$stamp
  RL=$RES/logs
  mkdir -p "$RL"; chmod 0755 "$RES" "$RL"; chown postgres:postgres "$RL"
  ln -sfn "$stamp" "$BENCH_DIR/results-backup/latest"
  : >"$RES/backup.runs"; : >"$RES/restore.runs"; : >"$RES/encryption-backup.runs"; : >"$RES/encryption-restore.runs"; : >"$RES/walpush.runs"; : >"$RES/walpush-segments.txt"
  : >"$RES/archive.runs"; : >"$RES/replay.runs"
  log "results: $RES; RUNS=$RUNS"

  ensure_pgvigil_bin || die "no pgvigil binary: $PGVIGIL_NOTE"
  ensure_cluster_built
  write_configs
  prepare_cluster
  # every pgBackRest stanza exists before any archive_command names it
  for phase in $PGBR_VERSIONS; do pgbr_stanza "$phase" nocheck; done
  context

  # every tool reads a warm page cache (the cluster fits in RAM): one untimed read first
  log "warming the page cache: reading $PGDATA once"
  timeout 300 tar -C "$PGDATA" --exclude=./pg_wal -cf - . | cat >/dev/null || true
  for phase in $PHASES; do
    case $phase in
      pgbr | pgvigil | restore | encryption | replay) wait_quiet "$phase"; "phase_$phase" ;;
      archive) phase_archive ;;   # waits for a quiet host before each burst itself
      wal-push) wait_quiet wal-push; phase_walpush ;;
      *) die "PHASES: unknown phase $phase (pgbr pgvigil restore encryption wal-push archive replay)" ;;
    esac
  done

  summary
  if [ -s "$RES/errors.txt" ]; then exit 1; fi
}

main
