#!/usr/bin/env bash
# Audit forwarding benchmark: how fast `pgvigil run` forwards rows of
# audit.logged_actions (deploy/sql/audit.sql) as hash-chained JSON lines.
#
# On a throwaway PG 15 cluster of its own (initdb under $BENCH_DIR/audit, port
# AU_PGPORT, unix socket in a private dir; the scrape/backup bench cluster is not
# touched), with `pgvigil audit install --table public.bench_items`:
#   per round (ROUNDS, default 3): one transaction inserts ROWS (100,000) rows into
#   the audited table (one trigger call and one audit row per row); from its commit,
#   the time until pgvigil_audit_cursor_id reaches max(id), i.e. until every row was
#   written to stdout AND the audit file and the cursor committed.
# Reported per round: insert time (trigger cost, not pgvigil), forwarding seconds,
# events/s = ROWS / forwarding seconds, pgvigil_audit_forward_lag_seconds at the end
# (the newest row's age when it was forwarded), pgvigil CPU seconds; medians at the end.
# Then a stream: STREAM_CLIENTS (4) pgbench clients x STREAM_TX (5,000) single-row
# transactions; the forward lag when pgbench ends and how long until all are forwarded.
# Then checked: the file holds every row exactly once (ids), and `pgvigil audit verify`
# passes on the file and on captured stdout (timed).
#
# Bounded: the script re-execs itself under `timeout` (BENCH_TIMEOUT), every step
# has its own timeout, only 127.0.0.1 and a unix socket are used. On exit it stops
# pgvigil and the cluster and deletes the cluster and the audit output.
#
# Usage (as root):  bench/audit.sh [--smoke]      (--smoke: ROWS=10000, ROUNDS=1)
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

# Watchdog: nothing in this script may run unbounded, whatever hangs.
if [ -z "${PGVIGIL_AUDIT_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_AUDIT_BENCH_WATCHDOG=1 SMOKE
  exec timeout -k 30 "${BENCH_TIMEOUT:-1800}" bash "$0"
fi

[ "$(id -u)" = 0 ] || { echo "run as root (the cluster and pgvigil run as user postgres)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$SMOKE" = 1 ]; then ROWS=${ROWS:-10000} ROUNDS=${ROUNDS:-1}; else ROWS=${ROWS:-100000} ROUNDS=${ROUNDS:-3}; fi
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || { echo "ROWS must be a positive integer" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS must be 1..99" >&2; exit 2; }
STREAM_CLIENTS=${STREAM_CLIENTS:-4}       # stream phase: pgbench clients
if [ "$SMOKE" = 1 ]; then STREAM_TX=${STREAM_TX:-500}; else STREAM_TX=${STREAM_TX:-5000}; fi
TARGET_EPS=${TARGET_EPS:-20000}           # events/s the issue asks for
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}       # seconds a round may take to forward, at most

AU_PGPORT=${AU_PGPORT:-55452}             # the audit bench cluster (loopback)
AU_METRICS_PORT=${AU_METRICS_PORT:-59435} # pgvigil [server] listen
AU_DIR=$BENCH_DIR/audit
AU_DATA=$AU_DIR/data
AU_SOCK=$AU_DIR/sock
AU_OUT=$AU_DIR/out
AU_CONF=$AU_DIR/pgvigil-audit.toml
AU_LOG=$AU_DIR/logs
RESULTS=$AU_DIR/results-$(date -u +%Y%m%dT%H%M%SZ)

PGVIGIL_PID=""
cleanup() {
  set +e
  stop_pid "$PGVIGIL_PID"
  if [ -f "$AU_DATA/postmaster.pid" ]; then
    timeout 120 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$AU_DATA" -m immediate -w stop >/dev/null 2>&1
  fi
  rm -rf "$AU_DATA" "$AU_OUT" "$AU_SOCK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_a() {
  timeout 600 runuser -u postgres -- env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q \
    -h "$AU_SOCK" -p "$AU_PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -At "$@"
}
metric() { curl -s -m 5 "http://127.0.0.1:$AU_METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# ---------------------------------------------------------------- setup

ensure_packages postgresql-15 curl
mkdir -p "$AU_DIR" "$AU_LOG" "$RESULTS"
build_pgvigil "$AU_LOG/build.log" || die "$PGVIGIL_NOTE"
install -d -m 755 "$BENCH_DIR/bin"
install -m 755 "$PGVIGIL_BIN" "$BENCH_DIR/bin/pgvigil-audit"
BIN=$BENCH_DIR/bin/pgvigil-audit

port_open "$AU_PGPORT" && die "port $AU_PGPORT is taken (set AU_PGPORT)"
port_open "$AU_METRICS_PORT" && die "port $AU_METRICS_PORT is taken (set AU_METRICS_PORT)"
cleanup
mkdir -p "$AU_SOCK" "$AU_OUT"
chown postgres: "$AU_DIR" "$AU_SOCK" "$AU_OUT" "$AU_LOG" "$RESULTS"
log "initdb $AU_DATA"
timeout 120 runuser -u postgres -- "$PGBIN/initdb" -D "$AU_DATA" -U postgres -A trust >"$AU_LOG/initdb.log" 2>&1
cat >>"$AU_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $AU_PGPORT
unix_socket_directories = '$AU_SOCK'
shared_buffers = 256MB
max_wal_size = 4GB
synchronous_commit = on
EOF
timeout 120 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$AU_DATA" -l "$AU_LOG/pg.log" -w start >/dev/null

cat >"$AU_CONF" <<EOF
[server]
listen = "127.0.0.1:$AU_METRICS_PORT"
[postgres]
dsn = "postgresql://postgres@127.0.0.1:$AU_PGPORT/postgres?sslmode=disable"
[audit]
stdout = true
file = "$AU_OUT/audit.jsonl"
table = "audit.logged_actions"
[storage]
url = "file://$AU_OUT/repo"
[backup]
schedule = "off"
[drill]
schedule = "off"
[pitr]
heartbeat_interval = "0s"
check_interval = "1h"
EOF
chown postgres: "$AU_CONF"

psql_a -c "CREATE TABLE public.bench_items (n bigint PRIMARY KEY, note text, password text)"
timeout 120 runuser -u postgres -- "$BIN" audit install -c "$AU_CONF" --table public.bench_items >"$AU_LOG/install.log" 2>&1 ||
  { cat "$AU_LOG/install.log" >&2; die "audit install failed"; }

log "starting pgvigil run (stdout -> $AU_OUT/stdout.jsonl)"
setpriv --reuid=postgres --regid=postgres --init-groups env RUST_LOG=warn "$BIN" run -c "$AU_CONF" \
  >"$AU_OUT/stdout.jsonl" 2>"$AU_LOG/pgvigil.stderr" &
PGVIGIL_PID=$!
wait_http_200 "http://127.0.0.1:$AU_METRICS_PORT/readyz" "$PGVIGIL_PID" 60 || die "pgvigil did not become ready"

# ---------------------------------------------------------------- rounds

printf 'round rows insert_s forward_s events_per_s lag_end_s pgvigil_cpu_s\n' >"$RESULTS/rounds.txt"
base=0
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r: inserting $ROWS audited rows in one transaction"
  t0=$(now)
  psql_a -c "INSERT INTO public.bench_items SELECT g, md5(g::text), 'pw' || g FROM generate_series($base + 1, $base + $ROWS) g"
  t1=$(now)
  ticks0=$(cpu_ticks "$PGVIGIL_PID")
  max_id=$(psql_a -c "SELECT max(id) FROM audit.logged_actions")
  deadline=$(($(date +%s) + DRAIN_TIMEOUT))
  while :; do
    c=$(metric pgvigil_audit_cursor_id)
    [ "${c%.*}" = "$max_id" ] && break
    [ "$(date +%s)" -ge "$deadline" ] && die "round $r: cursor ${c:-none} did not reach $max_id within ${DRAIN_TIMEOUT}s"
    sleep 0.02
  done
  t2=$(now)
  ticks1=$(cpu_ticks "$PGVIGIL_PID")
  lag=$(metric pgvigil_audit_forward_lag_seconds)
  insert_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  fwd_s=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')
  eps=$(awk -v n="$ROWS" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.0f", n / (b - a) }')
  cpu=$(awk -v t="$((ticks1 - ticks0))" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')
  printf '%s %s %s %s %s %s %s\n' "$r" "$ROWS" "$insert_s" "$fwd_s" "$eps" "$lag" "$cpu" >>"$RESULTS/rounds.txt"
  log "round $r: insert ${insert_s}s, forwarded in ${fwd_s}s = ${eps} events/s, lag at end ${lag}s, pgvigil CPU ${cpu}s"
  base=$((base + ROWS))
done

# ---------------------------------------------------------------- stream

# Many small transactions at once (the usual OLTP shape): pgbench clients insert one audited
# row per transaction while pgvigil forwards; how far behind is it when they stop?
log "stream: $STREAM_CLIENTS pgbench clients x $STREAM_TX single-row transactions"
psql_a -c "CREATE SEQUENCE IF NOT EXISTS public.bench_n START $((base + 1))"
echo "INSERT INTO public.bench_items SELECT nextval('public.bench_n'), 'stream', 'pw' || currval('public.bench_n');" >"$AU_OUT/stream.sql"
chown postgres: "$AU_OUT/stream.sql"
ticks0=$(cpu_ticks "$PGVIGIL_PID")
timeout 600 runuser -u postgres -- "$PGBIN/pgbench" -n -h "$AU_SOCK" -p "$AU_PGPORT" -U postgres \
  -c "$STREAM_CLIENTS" -j 2 -t "$STREAM_TX" -f "$AU_OUT/stream.sql" postgres >"$RESULTS/pgbench-stream.txt" 2>&1 ||
  { cat "$RESULTS/pgbench-stream.txt" >&2; die "pgbench failed"; }
t1=$(now)
stream_lag=$(metric pgvigil_audit_forward_lag_seconds)
max_id=$(psql_a -c "SELECT max(id) FROM audit.logged_actions")
deadline=$(($(date +%s) + DRAIN_TIMEOUT))
until [ "$(metric pgvigil_audit_cursor_id | cut -d. -f1)" = "$max_id" ]; do
  [ "$(date +%s)" -ge "$deadline" ] && die "stream: cursor did not reach $max_id within ${DRAIN_TIMEOUT}s"
  sleep 0.02
done
catch_up=$(since "$t1")
stream_cpu=$(awk -v t="$(($(cpu_ticks "$PGVIGIL_PID") - ticks0))" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')
stream_tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' "$RESULTS/pgbench-stream.txt")
stream_rows=$((STREAM_CLIENTS * STREAM_TX))
log "stream: $stream_tps tx/s; lag when pgbench ended ${stream_lag}s; caught up ${catch_up}s later; pgvigil CPU ${stream_cpu}s"

# ---------------------------------------------------------------- checks

stop_pid "$PGVIGIL_PID"; PGVIGIL_PID=""
total=$((ROWS * ROUNDS + stream_rows))
file_rows=$(grep -c '"kind":"data"' "$AU_OUT/audit.jsonl" || true)
file_unique=$(grep '"kind":"data"' "$AU_OUT/audit.jsonl" | grep -oE '"details":\{"id": ?[0-9]+' | sort -u | wc -l)
stdout_rows=$(grep -c '"kind":"data"' "$AU_OUT/stdout.jsonl" || true)
leaked=$(grep -c '"pw[0-9]' "$AU_OUT/audit.jsonl" || true)
t0=$(now)
verify_file=$(timeout 300 "$BIN" audit verify "$AU_OUT/audit.jsonl" 2>&1) && vf=ok || vf=FAILED
verify_s=$(since "$t0")
# stdout also carries the daemon's own log lines: verify the audit lines (they end in "hash").
grep -E ',"hash":"[0-9a-f]{64}"}$' "$AU_OUT/stdout.jsonl" >"$AU_OUT/stdout-audit.jsonl" || true
verify_stdout=$(timeout 300 "$BIN" audit verify "$AU_OUT/stdout-audit.jsonl" 2>&1) && vs=ok || vs=FAILED
size=$(stat -c %s "$AU_OUT/audit.jsonl")

med() { awk -v c="$1" 'NR > 1 { print $c }' "$RESULTS/rounds.txt" | stats | awk '{print $3}'; }
eps_med=$(med 5)
{
  echo "== audit forwarding: $ROUNDS round(s) of $ROWS audited inserts (one transaction each) =="
  column -t "$RESULTS/rounds.txt"
  echo
  echo "median: forwarded in $(med 4)s = $eps_med events/s (target $TARGET_EPS: $(awk -v e="$eps_med" -v t="$TARGET_EPS" 'BEGIN { print (e >= t ? "met" : "MISSED") }')), lag at end $(med 6)s, pgvigil CPU $(med 7)s; insert (trigger) $(med 3)s"
  echo "stream: $stream_rows single-row transactions from $STREAM_CLIENTS clients at $stream_tps tx/s; forward lag when they stopped ${stream_lag}s, all forwarded ${catch_up}s later; pgvigil CPU ${stream_cpu}s"
  echo "file: $file_rows data lines ($file_unique distinct ids; expected $total), $(div "$size" 1048576 %.1f) MiB; stdout: $stdout_rows data lines"
  echo "redacted column values in the file: $leaked (expected 0)"
  echo "audit verify file: $vf in ${verify_s}s ($verify_file)"
  echo "audit verify stdout: $vs (${verify_stdout%%,*})"
} | tee "$RESULTS/summary.txt"
[ "$file_rows" = "$total" ] && [ "$file_unique" = "$total" ] && [ "$stdout_rows" = "$total" ] &&
  [ "$leaked" = 0 ] && [ "$vf" = ok ] && [ "$vs" = ok ]
