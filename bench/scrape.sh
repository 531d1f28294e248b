#!/usr/bin/env bash
# Scrape benchmark: pgvigil against postgres_exporter 0.19.1 (Debian sid's package,
# fetched by bench/fetch-exporters.sh; PGEXP_BIN=... to use another), side by side in
# one run, on the same PG15 cluster with the same idle load.
#
# Targets (each its own process, measured one after the other):
#   pgexp-default       postgres_exporter, default collectors
#   pgexp-all           postgres_exporter with the optional collectors pgvigil always
#                       runs (long_running_transactions, process_idle, database_wraparound,
#                       statio_user_indexes, stat_checkpointer), the like-for-like target
#   pgvigil             pgvigil run -c <config from write_pgvigil_config>, defaults
# Per target: cold (first) scrape reported apart, then $SCRAPES sequential
# scrapes timed with curl time_total; SQL statements per scrape (server log,
# log_statement=all on the target's role; and pg_stat_statements calls);
# RSS/HWM after the loop; CPU ms per scrape; series; `promtool check metrics`.
#
# Bounded: the whole script re-execs itself under `timeout` (BENCH_TIMEOUT),
# every step has its own timeout, only 127.0.0.1 is used, and everything it
# starts (cluster, exporters, idle clients) is stopped on exit. The cluster's
# data dir under $BENCH_DIR is kept (stopped) for the next run.
#
# Usage (as root):  bench/scrape.sh [--smoke] [--only postgres_exporter|pgvigil|TARGET,...]
# See bench/README.md for every setting.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

SMOKE=${SMOKE:-0}
ONLY=${ONLY:-}
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1 ;;
    --only) ONLY=${2:?--only needs a value}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$SMOKE" = 1 ] && export SCRAPES=${SCRAPES:-3}

# Watchdog: nothing in this script may run unbounded, whatever hangs.
if [ -z "${PGVIGIL_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_BENCH_WATCHDOG=1 SMOKE ONLY
  exec timeout -k 30 "${BENCH_TIMEOUT:-5400}" bash "$0"
fi

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and runs servers as user postgres)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -z "${PGEXP_BIN:-}" ]; then
  eval "$("$(dirname "${BASH_SOURCE[0]}")/fetch-exporters.sh" | grep '^PGEXP_BIN=')"
fi
PROMTOOL=/usr/bin/promtool
# Debian's python, because python3-psycopg2 installs for it (a pyenv python3
# earlier on PATH would not see it).
PYTHON=/usr/bin/python3

# ---------------------------------------------------------------- targets

resolve_targets() {
  local t picked=()
  for t in ${ONLY//,/ }; do
    case $t in
      postgres_exporter | pgexp) picked+=(pgexp-default pgexp-all) ;;
      pgexp-default | pgexp-all | pgvigil) picked+=("$t") ;;
      *) die "unknown target '$t' (postgres_exporter, pgvigil, pgexp-default, pgexp-all)" ;;
    esac
  done
  [ ${#picked[@]} -eq 0 ] && picked=(pgexp-default pgexp-all pgvigil)
  # always the same order (and each once), whatever order ONLY named them in
  TARGETS=()
  for t in pgexp-default pgexp-all pgvigil; do
    [[ " ${picked[*]} " == *" $t "* ]] && TARGETS+=("$t")
  done
  return 0
}

want() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools

ensure_tools() {
  # python3-psycopg2: for the idle-client helper. time: GNU time, kept for
  # ad-hoc `/usr/bin/time -v` checks next to this bench.
  ensure_packages postgresql-15 postgresql-contrib prometheus \
    curl time python3-psycopg2
  local f
  for f in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/pgbench" "$PGEXP_BIN" "$PROMTOOL" "$PYTHON"; do
    [ -x "$f" ] || die "$f missing after install"
  done
  # The exporters run as postgres, which cannot read root's cache: run a copy.
  mkdir -p "$BINDIR"
  install -m 0755 "$PGEXP_BIN" "$BINDIR/postgres_exporter"
  PGEXP_BIN=$BINDIR/postgres_exporter
}

# ---------------------------------------------------------------- pgvigil binary

PGVIGIL_STATUS=skipped
PGVIGIL_NOTE=""

# Build (if missing or older than the sources) and copy the binary to
# $BINDIR, where the postgres user can execute it ($HOME/.cache is root's).
# Done before the cluster is touched so compile CPU never overlaps a measurement.
ensure_pgvigil_bin() {
  local rc=0
  build_pgvigil "$LOGDIR/cargo-build.log" || rc=$?
  case $rc in
    0) ;;
    1) PGVIGIL_STATUS=build-failed; return 1 ;;
    *) PGVIGIL_STATUS=missing; return 1 ;;
  esac
  [ -z "$BUILD_SECONDS" ] || echo "cargo_build_seconds $BUILD_SECONDS" >>"$BENCH_DIR/timing.txt"
  install -m 0755 "$PGVIGIL_BIN" "$BINDIR/pgvigil"
  PGVIGIL_STATUS=ready
}

write_pgvigil_config() {
  PGVIGIL_CONF=$CONFDIR/pgvigil.toml
  cat >"$PGVIGIL_CONF" <<EOF
# written by bench/scrape.sh: pgvigil defaults, bench cluster, loopback only
[server]
listen = "127.0.0.1:$PGVIGIL_PORT"
[postgres]
dsn = "postgresql://pgvigil@127.0.0.1:$PGPORT/postgres?sslmode=disable"
EOF
  chmod 0644 "$PGVIGIL_CONF"
}

# ---------------------------------------------------------------- cluster

prepare_dirs() {
  mkdir -p "$BENCH_DIR" "$BENCH_DIR/pg15" "$RUNDIR" "$LOGDIR" "$CONFDIR" "$BINDIR" "$BENCH_DIR/results"
  chown postgres:postgres "$BENCH_DIR/pg15" "$RUNDIR" "$LOGDIR"
  chmod 0755 "$BENCH_DIR" "$CONFDIR" "$BINDIR"
}

init_cluster() {
  log "initdb $PGDATA"
  timeout 120 runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=trust >"$LOGDIR/initdb.log"
  cat >"$PGDATA/pg_hba.conf" <<EOF
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
EOF
  # lc_messages=C: the statement counter greps English "LOG:  statement:" lines.
  cat >"$PGDATA/bench.conf" <<EOF
# bench settings, included from postgresql.conf (bench/scrape.sh)
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$RUNDIR'
max_connections = 300
shared_buffers = 256MB
max_wal_size = 4GB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 5000
track_io_timing = on
lc_messages = 'C'
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
log_disconnections = off
EOF
  chown postgres:postgres "$PGDATA/pg_hba.conf" "$PGDATA/bench.conf"
  echo "include 'bench.conf'" >>"$PGDATA/postgresql.conf"
}

load_data() {
  psql_b -d postgres -c "DROP DATABASE IF EXISTS bench" -c "DROP DATABASE IF EXISTS appdb" \
    -c "CREATE DATABASE bench" -c "CREATE DATABASE appdb"

  log "pgbench -i -s $SCALE bench"
  local t0 b e; t0=$(now)
  timeout 1200 runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres \
    -i -q -s "$SCALE" bench >"$LOGDIR/pgbench-init.log" 2>&1
  echo "pgbench_init_seconds $(since "$t0")" >>"$BENCH_DIR/timing.txt"

  # Many small relations are what make per-table collectors expensive: 3000
  # tables, each with a sequence, a PK and one secondary index.
  log "creating $NTABLES tables in appdb"
  t0=$(now)
  for ((b = 1; b <= NTABLES; b += 250)); do
    e=$((b + 249)); ((e > NTABLES)) && e=$NTABLES
    small_tables_sql "$b" "$e" | psql_b -d appdb
  done
  timeout 900 runuser -u postgres -- "$PGBIN/vacuumdb" -h 127.0.0.1 -p "$PGPORT" -U postgres -q -z appdb
  echo "appdb_tables_seconds $(since "$t0")" >>"$BENCH_DIR/timing.txt"
}

# Roles and settings: cheap and idempotent, so applied on every run (a reused
# cluster from an older version of this script gets them too).
ensure_roles() {
  psql_b -d postgres <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['exporter', 'pgvigil'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN IN ROLE pg_monitor', r);
    END IF;
    EXECUTE format('ALTER ROLE %I SET log_statement = %L', r, 'all');
  END LOOP;
END $$;
SQL
}

# A read workload so pg_stat_statements has a few hundred entries (exporters
# that read it pay per entry). The view is emptied first: loading the data
# leaves ~3000 ANALYZE entries (one per table) that no real server keeps.
# Rerun whenever the entry count has drifted out of the intended range.
ensure_workload() {
  local n; n=$(psql_v -d postgres -c 'SELECT count(*) FROM pg_stat_statements')
  ((n >= 300 && n <= 2000)) && return 0
  log "read workload for pg_stat_statements ($n entries now)"
  psql_b -d postgres -c 'SELECT pg_stat_statements_reset()' >/dev/null
  timeout 120 runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres \
    -n -S -c 4 -j 2 -T 10 bench >"$LOGDIR/pgbench-select.log" 2>&1
  # two distinct statements on every 10th table: ~600 entries
  local i
  for ((i = 1; i <= NTABLES; i += 10)); do
    echo "SELECT count(*) FROM app_t$i WHERE account_id = 3;"
    echo "UPDATE app_t$i SET amount = amount + 1 WHERE id = 1;"
  done | psql_b -d appdb >/dev/null
}

setup_cluster() {
  local t0 done_file=$BENCH_DIR/pg15/setup-done
  t0=$(now)
  if [ "${FORCE:-0}" = 1 ] && [ -d "$PGDATA" ]; then
    log "FORCE=1: rebuilding the bench cluster"
    stop_cluster || true
    rm -rf "$PGDATA" "$done_file"
  fi
  [ -f "$PGDATA/PG_VERSION" ] || init_cluster
  start_cluster
  if [ ! -f "$done_file" ]; then
    load_data
    echo "scale=$SCALE ntables=$NTABLES built=$(date -u +%FT%TZ)" >"$done_file"
  else
    log "reusing bench cluster ($(cat "$done_file"))"
  fi
  ensure_roles
  ensure_workload
  SETUP_SECONDS=$(since "$t0")
  echo "setup_seconds $SETUP_SECONDS ($(date -u +%FT%TZ))" >>"$BENCH_DIR/timing.txt"
}

# ---------------------------------------------------------------- idle clients

IDLE_PID=
start_idle_clients() {
  local ready=$RUNDIR/idle.ready i
  rm -f "$ready"
  # bounded lifetime: never longer than the whole bench may run
  setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PYTHON" "$BENCH_SRC/idle_clients.py" "$PGPORT" "$NIDLE" "${BENCH_TIMEOUT:-5400}" "$ready" \
    bench appdb postgres >>"$LOGDIR/idle-clients.log" 2>&1 &
  IDLE_PID=$!
  for ((i = 0; i < 600; i++)); do
    [ -s "$ready" ] && break
    kill -0 "$IDLE_PID" 2>/dev/null || die "idle client helper died, see $LOGDIR/idle-clients.log"
    sleep 0.1
  done
  [ -s "$ready" ] || die "idle clients did not come up within 60 s"
  log "holding $(cat "$ready") idle client connections"
}

# ---------------------------------------------------------------- measuring

CUR_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  stop_pid "$CUR_PID"; CUR_PID=
  stop_pid "$IDLE_PID"; IDLE_PID=
  if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/PG_VERSION" ]; then
    stop_cluster || log "could not stop the bench cluster cleanly"
  fi
  exit "$rc"
}

# one_scrape URL BODY : prints "time_s bytes http_code"
# (curl prints the -w line on failure too, with code 000)
one_scrape() { curl -s -m 120 -o "$2" -w '%{time_total} %{size_download} %{http_code}\n' "$1" || true; }

# measure NAME ROLE READY_KIND [VAR=value...] CMD... : start CMD as user postgres
# with a clean environment (plus the VAR=value given), measure, stop.
# READY_KIND: port (wait for the metrics port) or readyz (wait for GET /readyz = 200).
measure() {
  local name=$1 role=$2 ready_kind=$3; shift 3
  local port url out=$RES/$name elog=$LOGDIR/$name.log kv=$RES/$name.kv
  case $name in pgvigil) port=$PGVIGIL_PORT ;; *) port=$PGEXP_PORT ;; esac
  url="http://127.0.0.1:$port/metrics"
  log "== $name: $*"
  : >"$kv"
  echo "name=$name" >>"$kv"

  # A process already on the port would be measured instead of ours.
  if port_open "$port"; then
    printf 'status=port-taken\nnote=127.0.0.1:%s already in use by another process\n' "$port" >>"$kv"; log "port $port is already in use; skipping $name"; return 1
  fi

  pgss_reset "$role"
  local o_start o_ready o_cold o_loop0 o_loop1 o_end t_start
  o_start=$(log_size); t_start=$(now)
  : >"$elog"
  (cd "$RUNDIR" && exec setpriv --reuid=postgres --regid=postgres --init-groups \
      env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$RUNDIR" "$@") >>"$elog" 2>&1 &
  CUR_PID=$!

  local ok=1
  if [ "$ready_kind" = readyz ]; then
    wait_http_200 "http://127.0.0.1:$port/readyz" "$CUR_PID" 30 || ok=0
  else
    wait_port "$port" "$CUR_PID" 30 || ok=0
  fi
  if [ $ok = 0 ]; then
    printf 'status=not-ready\nnote=exited or not ready (%s) within 30 s, see %s\n' "$ready_kind" "$elog" >>"$kv"
    log "$name did not become ready; last lines of $elog:"; tail -n 20 "$elog" >&2 || true
    stop_pid "$CUR_PID"; CUR_PID=
    return 1
  fi
  local ready_s; ready_s=$(since "$t_start")
  o_ready=$(log_size)
  local rss0; rss0=$(status_kb "$CUR_PID" VmRSS)

  # Cold scrape: the first after start (connects, discovers databases, fills caches).
  local cold; cold=$(one_scrape "$url" "$out.cold.metrics")
  sleep 0.3; o_cold=$(log_size)

  # Timed loop.
  local s0 e0 s1 e1 c0 c1 i
  read -r s0 e0 < <(pgss_snapshot "$role")
  c0=$(cpu_ticks "$CUR_PID"); o_loop0=$(log_size)
  : >"$out.times"
  for ((i = 0; i < SCRAPES; i++)); do one_scrape "$url" "$out.metrics" >>"$out.times"; done
  sleep 0.3
  o_loop1=$(log_size); c1=$(cpu_ticks "$CUR_PID")
  read -r s1 e1 < <(pgss_snapshot "$role")
  local rss hwm; rss=$(status_kb "$CUR_PID" VmRSS); hwm=$(status_kb "$CUR_PID" VmHWM)
  local alive=yes; kill -0 "$CUR_PID" 2>/dev/null || alive=no

  stop_pid "$CUR_PID"; CUR_PID=
  sleep 0.5; o_end=$(log_size)
  local s_end; read -r s_end _ < <(pgss_snapshot "$role")

  local n mn med mx
  read -r n mn med mx < <(cut -d' ' -f1 "$out.times" | stats)
  local prom_rc=0
  "$PROMTOOL" check metrics <"$out.metrics" >"$out.promtool.txt" 2>&1 || prom_rc=$?
  {
    echo "status=ok"
    echo "cmd=$*"
    echo "alive_after_loop=$alive"
    echo "ready_seconds=$ready_s"
    echo "cold_ms=$(awk -v t="${cold%% *}" 'BEGIN {printf "%.1f", t * 1000}')"
    echo "cold_http=$(echo "$cold" | cut -d' ' -f3)"
    echo "cold_bytes=$(echo "$cold" | cut -d' ' -f2)"
    echo "cold_series=$(series "$out.cold.metrics")"
    echo "scrapes=$n"
    echo "min_ms=$(awk -v t="$mn" 'BEGIN {printf "%.1f", t * 1000}')"
    echo "median_ms=$(awk -v t="$med" 'BEGIN {printf "%.1f", t * 1000}')"
    echo "max_ms=$(awk -v t="$mx" 'BEGIN {printf "%.1f", t * 1000}')"
    echo "http_codes=$(cut -d' ' -f3 "$out.times" | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')"
    echo "bytes=$(cut -d' ' -f2 "$out.times" | stats | cut -d' ' -f3)"
    echo "series=$(series "$out.metrics")"
    echo "families=$(grep -c '^# TYPE' "$out.metrics" || true)"
    echo "rss_kb_before_first_scrape=$rss0"
    echo "rss_kb=$rss"
    echo "hwm_kb=$hwm"
    echo "cpu_ms_per_scrape=$(awk -v a="$c0" -v b="$c1" -v n="$SCRAPES" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", (b - a) * 1000 / hz / n}')"
    echo "stmts_startup=$(stmt_count "$role" "$o_start" "$o_ready")"
    echo "stmts_cold=$(stmt_count "$role" "$o_ready" "$o_cold")"
    echo "stmts_per_scrape=$(div "$(stmt_count "$role" "$o_loop0" "$o_loop1")" "$SCRAPES")"
    echo "empty_pings_per_scrape=$(div "$(ping_count "$role" "$o_loop0" "$o_loop1")" "$SCRAPES")"
    echo "stmts_loop_by_db=$(stmt_by_db "$role" "$o_loop0" "$o_loop1")"
    echo "stmts_whole_run=$(stmt_count "$role" "$o_start" "$o_end")"
    echo "errors_whole_run=$(err_count "$role" "$o_start" "$o_end")"
    echo "pgss_calls_per_scrape=$(div "$((s1 - s0))" "$SCRAPES")"
    echo "pgss_exec_ms_per_scrape=$(awk -v a="$e0" -v b="$e1" -v n="$SCRAPES" 'BEGIN {printf "%.2f", (b - a) / n}')"
    echo "pgss_calls_whole_run=$s_end"
    echo "promtool_lines=$(wc -l <"$out.promtool.txt")"
    echo "promtool_rc=$prom_rc"
  } >>"$kv"

  # Human-readable detail: the numbers plus what the statements were.
  {
    cat "$kv"
    echo "top_families (series name):"
    top_families "$out.metrics" | sed 's/^/  /'
    echo "statements of role $role by server time (pg_stat_statements, whole run):"
    psql_b -d postgres -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
        round(mean_exec_time::numeric, 2) AS mean_ms, rows,
        left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
      WHERE r.rolname = '$role' ORDER BY total_exec_time DESC LIMIT 20" | sed 's/^/  /'
    echo "promtool check metrics (first 20 lines):"
    awk 'NR <= 20' "$out.promtool.txt" | sed 's/^/  /'
  } >"$out.txt"
  log "$name: median $(kv_get "$kv" median_ms) ms, $(kv_get "$kv" stmts_per_scrape) stmts/scrape, series $(kv_get "$kv" series)"
  sleep 1   # let the server settle before the next target
}

kv_get() { local v; v=$(grep -m1 "^$2=" "$1" 2>/dev/null | cut -d= -f2-) || true; echo "${v:-n/a}"; }

# ---------------------------------------------------------------- report

context() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cpus, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "postgres: $(psql_v -d postgres -c 'SHOW server_version')"
    echo "postgres_exporter: $("$PGEXP_BIN" --version 2>&1 | awk 'NR == 1')"
    echo "pgvigil: ${PGVIGIL_BIN:-n/a} ($PGVIGIL_STATUS)"
    echo "repo: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' +uncommitted changes')"
    echo "cluster: $(cat "$BENCH_DIR/pg15/setup-done")"
    echo "databases: $(psql_v -d postgres -c "SELECT string_agg(datname || '=' || pg_size_pretty(pg_database_size(datname)), ' ' ORDER BY datname) FROM pg_database WHERE NOT datistemplate")"
    echo "appdb_relations: $(psql_v -d appdb -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")"
    echo "pg_stat_statements_entries: $(psql_v -d postgres -c 'SELECT count(*) FROM pg_stat_statements')"
    echo "loadavg_before_measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "client_backends: $(psql_v -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")"
    echo "scrapes_per_target: $SCRAPES"
  } >"$RES/context.txt"
}

summary() {
  local f=$RES/summary.txt t k
  local rows=(
    "status:status" "cold scrape ms:cold_ms" "median scrape ms:median_ms" "min ms:min_ms"
    "max ms:max_ms" "http codes (loop):http_codes" "SQL stmts/scrape (log):stmts_per_scrape"
    "  of which empty pings:empty_pings_per_scrape" "pgss calls/scrape:pgss_calls_per_scrape"
    "pgss exec ms/scrape:pgss_exec_ms_per_scrape" "SQL stmts at startup:stmts_startup" "SQL stmts cold scrape:stmts_cold"
    "SQL stmts whole run:stmts_whole_run" "server errors whole run:errors_whole_run"
    "CPU ms/scrape:cpu_ms_per_scrape" "RSS kB (after loop):rss_kb" "HWM kB:hwm_kb"
    "series (loop):series" "series (cold):cold_series" "bytes/scrape:bytes"
    "promtool check lines:promtool_lines"
  )
  {
    echo "# pgvigil scrape bench — $(date -u +%FT%TZ) — $SCRAPES scrapes per target, $NIDLE idle clients"
    sed 's/^/# /' "$RES/context.txt"
    echo
    printf '%-26s' "metric"; for t in "${TARGETS[@]}"; do printf ' %20s' "$t"; done; echo
    for r in "${rows[@]}"; do
      printf '%-26s' "${r%%:*}"
      for t in "${TARGETS[@]}"; do printf ' %20s' "$(kv_get "$RES/$t.kv" "${r#*:}")"; done
      echo
    done
    for t in "${TARGETS[@]}"; do
      [ "$(kv_get "$RES/$t.kv" status)" = ok ] && continue
      echo "$t: $(kv_get "$RES/$t.kv" status) — $(kv_get "$RES/$t.kv" note)"
    done
    if want pgvigil && want pgexp-all && [ -f "$RES/pgexp-all.metrics" ] && [ -f "$RES/pgvigil.metrics" ]; then
      echo
      echo "names, labels and values, postgres_exporter (all collectors) vs pgvigil (bench/compat.py):"
      "$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/compat.py" "$RES/pgexp-all.metrics" "$RES/pgvigil.metrics" \
        --ignore-label server | sed 's/^/  /'
    fi
    if want pgvigil; then
      echo
      for t in pgexp-default pgexp-all; do
        want "$t" || continue
        echo "ratio pgvigil / $t:"
        for k in median_ms:"median scrape" rss_kb:"RSS" stmts_per_scrape:"SQL stmts/scrape" cold_ms:"cold scrape"; do
          printf '  %-18s %s\n' "${k#*:}" \
            "$(div "$(kv_get "$RES/pgvigil.kv" "${k%%:*}")" "$(kv_get "$RES/$t.kv" "${k%%:*}")" %.3f)"
        done
      done
    else
      echo
      echo "pgvigil: skipped (ONLY=$ONLY)"
    fi
    echo
    echo "setup: ${SETUP_SECONDS:-?} s, measurements: ${MEASURE_SECONDS:-?} s, total: $(since "$T_TOTAL") s"
    echo "details: $RES/<target>.txt (top statements, top families), raw: *.times *.metrics *.kv"
  } >"$f"
  cat "$f"
}

# ---------------------------------------------------------------- main

main() {
  T_TOTAL=$(now)
  resolve_targets
  trap cleanup EXIT
  trap 'exit 143' INT TERM HUP

  ensure_tools
  prepare_dirs

  local stamp; stamp=$(date -u +%Y%m%dT%H%M%SZ)
  [ "$SMOKE" = 1 ] && stamp=$stamp-smoke
  RES=$BENCH_DIR/results/$stamp
  mkdir -p "$RES"
  ln -sfn "$stamp" "$BENCH_DIR/results/latest"
  log "results: $RES; targets: ${TARGETS[*]}; $SCRAPES scrapes each"

  if want pgvigil; then
    ensure_pgvigil_bin || log "pgvigil will not be measured: $PGVIGIL_NOTE"
    write_pgvigil_config
  else
    log "pgvigil skipped (ONLY=$ONLY)"
  fi

  setup_cluster
  start_idle_clients
  context

  local t0 failed=0; t0=$(now)
  local dsn="DATA_SOURCE_NAME=postgresql://exporter@127.0.0.1:$PGPORT/postgres?sslmode=disable"
  want pgexp-default && { measure pgexp-default exporter port "$dsn" \
    "$PGEXP_BIN" --web.listen-address="127.0.0.1:$PGEXP_PORT" || failed=1; }
  want pgexp-all && { measure pgexp-all exporter port "$dsn" \
    "$PGEXP_BIN" --web.listen-address="127.0.0.1:$PGEXP_PORT" --collector.long_running_transactions \
    --collector.process_idle --collector.database_wraparound --collector.statio_user_indexes \
    --collector.stat_checkpointer || failed=1; }
  if want pgvigil; then
    if [ "$PGVIGIL_STATUS" = ready ]; then
      measure pgvigil pgvigil readyz ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} \
        "$BINDIR/pgvigil" run -c "$PGVIGIL_CONF" || failed=1
    else
      printf 'name=pgvigil\nstatus=%s\nnote=%s\n' "$PGVIGIL_STATUS" "$PGVIGIL_NOTE" >"$RES/pgvigil.kv"; failed=1
    fi
  fi
  MEASURE_SECONDS=$(since "$t0")
  echo "loadavg_after_measuring: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/context.txt"

  summary
  return $failed
}

main
