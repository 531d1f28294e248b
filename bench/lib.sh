# shellcheck shell=bash
# Helpers shared by the bench scripts (scrape.sh, proxy.sh, backup.sh). Source it; do not run it.
#
# Everything here works from a clone of the repository alone: no file outside
# the repo is sourced. Settings are environment variables with defaults, so a
# run can be steered without editing the script (see bench/README.md).
# Settings below are used by the scripts that source this file:
# shellcheck disable=SC2034
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # .../bench
REPO_ROOT=$(cd "$BENCH_SRC/.." && pwd)

BENCH_DIR=${BENCH_DIR:-/work/bench-data/pgvigil}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# Ports: loopback only, none of them a default one, so the bench never collides
# with a system cluster (5432), an exporter a user runs (9187) or pgvigil's
# default (9432), nor with the reference anchors (55432 / 59187).
PGPORT=${PGPORT:-55442}              # bench cluster
PGEXP_PORT=${PGEXP_PORT:-59197}      # postgres_exporter
PGVIGIL_PORT=${PGVIGIL_PORT:-59432}  # pgvigil [server] listen

PGDATA=$BENCH_DIR/pg15/data
RUNDIR=$BENCH_DIR/run        # unix socket, readiness files
LOGDIR=$BENCH_DIR/logs       # server log, exporter logs, build log
CONFDIR=$BENCH_DIR/conf      # pgvigil config written by the script
BINDIR=$BENCH_DIR/bin        # a copy of the pgvigil binary the postgres user can execute
PGLOG=$LOGDIR/pg.log

SCALE=${SCALE:-50}           # pgbench scale of db "bench" (only used when the cluster is built)
NTABLES=${NTABLES:-3000}     # small tables in db "appdb" (only used when the cluster is built)
NIDLE=${NIDLE:-100}          # idle client connections held open while measuring
SCRAPES=${SCRAPES:-30}       # timed sequential scrapes per target

CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now() { date +%s.%N; }
# seconds since a `now` value, 1 decimal
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", e - s }'; }

# Run a command as the postgres OS user. runuser for short commands; long-lived
# measured processes use setpriv (it execs, so $! is the measured process).
as_pg() { runuser -u postgres -- "$@"; }

# psql against the bench cluster as superuser over loopback TCP, bounded.
psql_b() {
  timeout 300 runuser -u postgres -- env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" \
    -U postgres -v ON_ERROR_STOP=1 "$@"
}
# one value / one row, unaligned
psql_v() { psql_b -At -F ' ' "$@"; }

# small_tables_sql FIRST LAST : the SQL creating app_t<FIRST..LAST> (one transaction), each
# with a sequence, a primary key, a secondary index and 20 rows: the reference cluster's
# many small relations (scrape.sh's appdb, incremental.sh's cluster)
small_tables_sql() {
  cat <<SQL
BEGIN;
DO \$\$ BEGIN
  FOR i IN $1..$2 LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS app_t%s (
        id bigserial PRIMARY KEY, account_id int NOT NULL, status text NOT NULL,
        amount numeric(12,2), created_at timestamptz NOT NULL DEFAULT now())', i);
    EXECUTE format('CREATE INDEX IF NOT EXISTS app_t%s_account_idx ON app_t%s (account_id)', i, i);
    EXECUTE format('INSERT INTO app_t%s (account_id, status, amount)
        SELECT g %% 17, CASE WHEN g %% 3 = 0 THEN ''open'' ELSE ''closed'' END, g * 1.5
        FROM generate_series(1, 20) g', i);
  END LOOP;
END \$\$;
COMMIT;
SQL
}

# ---------------------------------------------------------------- packages

# The lock files apt and dpkg hold (fcntl locks) while they work.
APT_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)

# apt_busy : true while some process has one of the apt/dpkg lock files open (apt and dpkg
# open them only to lock them). Asks by file, never by process name, and takes no lock itself:
# `flock` would not see apt's fcntl locks, and briefly taking one would make an apt-get
# started at that moment fail.
apt_busy() {
  if command -v fuser >/dev/null 2>&1; then
    fuser -s "${APT_LOCKS[@]}" 2>/dev/null
  else
    local f
    for f in "${APT_LOCKS[@]}"; do
      [ -n "$(find /proc/[0-9]*/fd -lname "$f" -print -quit 2>/dev/null)" ] && return 0
    done
    return 1
  fi
}

# Wait (bounded) until no other apt/dpkg process holds the package locks: another
# process on this machine may be installing packages in the background, and apt-get
# fails at once on a held lock unless told to wait.
wait_apt_idle() {
  local limit=${APT_WAIT:-900} waited=0
  while apt_busy; do
    ((waited == 0)) && log "another apt/dpkg process is running; waiting (at most ${limit}s)"
    ((waited >= limit)) && die "apt/dpkg still busy after ${limit}s"
    sleep 5; waited=$((waited + 5))
  done
}

# ensure_packages PKG... : install only what is missing; apt-get update only then.
ensure_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing missing packages: ${missing[*]}"
  wait_apt_idle
  timeout 600 apt-get -o DPkg::Lock::Timeout=600 update -qq
  wait_apt_idle
  DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- processes

# Is something already listening on 127.0.0.1:PORT?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID [SECONDS] : until PORT accepts connections; fails early if
# PID (the process expected to open it) dies.
wait_port() {
  local port=$1 pid=$2 limit=${3:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    port_open "$port" && return 0
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited before opening port $port"; return 1; }
    sleep 0.1
  done
  log "port $port did not open within ${limit}s"; return 1
}

# wait_http_200 URL PID [SECONDS] : until URL answers 200 (pgvigil's /readyz).
wait_http_200() {
  local url=$1 pid=$2 limit=${3:-30} i code
  for ((i = 0; i < limit * 5; i++)); do
    code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited before $url returned 200"; return 1; }
    sleep 0.2
  done
  log "$url did not return 200 within ${limit}s (last code: ${code:-none})"; return 1
}

# stop_pid PID : TERM, wait up to 10 s, then KILL. Only ever a pid we started.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

# utime+stime of a process (all threads), in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# a /proc/PID/status field in kB (VmRSS, VmHWM)
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- cluster

pg_running() {
  [ -f "$PGDATA/postmaster.pid" ] &&
    timeout 30 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

start_cluster() {
  pg_running && return 0
  port_open "$PGPORT" && die "port $PGPORT is taken by something that is not the bench cluster"
  timeout 180 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 150 start >/dev/null
}

stop_cluster() {
  pg_running || return 0
  timeout 180 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 150 stop >/dev/null
}

# ---------------------------------------------------------------- statement accounting
#
# Roles "exporter" and "pgvigil" have log_statement=all, and log_line_prefix has
# %u@%d, so every statement they send is one server-log line
#   "... [pid] ROLE@DB LOG:  statement: ..."   (simple protocol)
#   "... [pid] ROLE@DB LOG:  execute s0: ..."  (extended protocol, e.g. tokio-postgres)
# Continuation lines of multi-line SQL have no prefix, so they are not counted.
# Errors are counted apart (an ERROR follows the already logged statement).

log_size() { stat -c %s "$PGLOG"; }

# log_since OFFSET : server log from byte OFFSET on
log_since() { tail -c +"$(($1 + 1))" "$PGLOG"; }

# stmt_count ROLE OFFSET0 OFFSET1 : statements ROLE sent between two log offsets
stmt_count() {
  head -c "$3" "$PGLOG" | tail -c +"$(($2 + 1))" |
    grep -cE " $1@[^ ]* LOG:  (statement|execute [^:]*):" || true
}
# empty statements (";"): lib/pq's connection check before each use, a round
# trip the server logs but pg_stat_statements does not track
ping_count() {
  head -c "$3" "$PGLOG" | tail -c +"$(($2 + 1))" | grep -cE " $1@[^ ]* LOG:  statement: ;$" || true
}
err_count() {
  head -c "$3" "$PGLOG" | tail -c +"$(($2 + 1))" | grep -cE " $1@[^ ]* (ERROR|FATAL):" || true
}
# stmt_by_db ROLE OFFSET0 OFFSET1 : "count db" per database
stmt_by_db() {
  head -c "$3" "$PGLOG" | tail -c +"$(($2 + 1))" |
    grep -oE " $1@[^ ]* LOG:  (statement|execute [^:]*):" |
    sed -E "s/^ $1@([^ ]*) .*/\1/" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}' || true
}

# pg_stat_statements calls and exec ms of ROLE (cluster-wide: every database)
pgss_snapshot() {
  psql_v -d postgres -c "SELECT coalesce(sum(calls),0), round(coalesce(sum(total_exec_time),0)::numeric, 3)
     FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = '$1'"
}
pgss_reset() {
  psql_b -d postgres -c "SELECT pg_stat_statements_reset((SELECT oid FROM pg_roles WHERE rolname = '$1'), 0, 0)" >/dev/null
}

# ---------------------------------------------------------------- numbers

# "n min median max" of numbers on stdin
stats() {
  sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "0 - - -"; exit }
    med = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    print NR, a[1], med, a[NR] }'
}

# sample lines of a metrics body (not comments, not blank)
series() { grep -v '^#' "$1" | grep -c . || true; }

# the 10 metric names with the most series ("count name")
top_families() {
  grep -v '^#' "$1" | grep . | sed -E 's/[{ ].*//' | sort | uniq -c | sort -rn | awk 'NR <= 10'
}

# div A B [FMT] : A / B, or n/a
div() {
  awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) { print "n/a"; exit }
    printf f "\n", a / b }'
}

# build_pgvigil LOGFILE : sets PGVIGIL_BIN to a release binary, building it with cargo when
# it is missing or older than the sources (an explicit PGVIGIL_BIN is used as is, never
# built). Sets BUILD_SECONDS when it built. Returns 1 (build failed) or 2 (no binary) with
# PGVIGIL_NOTE saying why.
build_pgvigil() {
  local logfile=$1 explicit=${PGVIGIL_BIN:+1}
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pgvigil-target}
  PGVIGIL_BIN=${PGVIGIL_BIN:-$CARGO_TARGET_DIR/release/pgvigil}
  BUILD_SECONDS=
  if [ -z "$explicit" ]; then
    local stale=""
    if [ ! -x "$PGVIGIL_BIN" ]; then
      stale="missing"
    elif [ -n "$(cd "$REPO_ROOT" && find src Cargo.toml Cargo.lock build.rs -newer "$PGVIGIL_BIN" -print -quit 2>/dev/null)" ]; then
      stale="older than the sources"
    fi
    if [ -n "$stale" ]; then
      command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
      log "pgvigil binary $stale: cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, log $logfile)"
      local t0; t0=$(now)
      if ! (cd "$REPO_ROOT" && timeout "${BUILD_TIMEOUT:-2700}" cargo build --release --bin pgvigil) \
        >"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        PGVIGIL_NOTE="cargo build --release failed, see $logfile"
        return 1
      fi
      BUILD_SECONDS=$(since "$t0")
      log "build done in $BUILD_SECONDS s"
    fi
  fi
  [ -x "$PGVIGIL_BIN" ] || { PGVIGIL_NOTE="$PGVIGIL_BIN not found"; return 2; }
}
