#!/usr/bin/env bash
# PgBouncer benchmark: pgvigil's [pgbouncer] collector against pgbouncer_exporter 0.12.0
# (Debian sid's package, fetched by bench/fetch-exporters.sh; PGBEXP_BIN=... to use
# another), side by side in one run on one PgBouncer in front of the bench cluster
# (bench/scrape.sh builds it), with NCLIENTS clients connected through it. Per target:
# median of SCRAPES sequential scrapes, CPU ms per scrape, RSS after the loop, series; then
# bench/compat.py compares names, labels and values.
#
# Bounded: every step has a timeout, the whole script runs under `timeout` (BENCH_TIMEOUT),
# only 127.0.0.1 is used, and what it starts (PgBouncer, both exporters, the clients) is
# stopped on exit, by pid. Usage (as root): bench/pgbouncer.sh
set -euo pipefail
if [ -z "${PGVIGIL_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_BENCH_WATCHDOG=1
  exec timeout -k 30 "${BENCH_TIMEOUT:-900}" bash "$0" "$@"
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGB_PORT=${PGB_PORT:-56442}          # PgBouncer
PGBEXP_PORT=${PGBEXP_PORT:-59137}    # pgbouncer_exporter
PGV_PORT=${PGV_PORT:-59433}          # pgvigil
NCLIENTS=${NCLIENTS:-50}
PYTHON=/usr/bin/python3
[ -n "${PGBEXP_BIN:-}" ] || eval "$("$BENCH_SRC/fetch-exporters.sh" | grep '^PGBEXP_BIN=')"
[ -d "$PGDATA" ] || die "no bench cluster in $PGDATA: run bench/scrape.sh once first"
ensure_packages pgbouncer curl python3-psycopg2

pids=()
cleanup() { local p; for p in "${pids[@]}"; do stop_pid "$p"; done; stop_cluster || true; }
trap cleanup EXIT INT TERM
start_cluster

dir=$BENCH_DIR/pgbouncer
mkdir -p "$dir" "$BINDIR"
chown postgres "$dir"
install -m 0755 "$PGBEXP_BIN" "$BINDIR/pgbouncer_exporter"
printf '"pgbouncer" ""\n"postgres" ""\n' >"$dir/users.txt"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=postgres
appdb = host=127.0.0.1 port=$PGPORT dbname=appdb user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
admin_users = pgbouncer
pool_mode = transaction
; lib/pq (pgbouncer_exporter) sends extra_float_digits; pgvigil needs no such line
ignore_startup_parameters = extra_float_digits
max_client_conn = 500
logfile = $dir/pgbouncer.log
pidfile =
INI
chown postgres "$dir"/*
runuser -u postgres -- pgbouncer "$dir/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!)
wait_port "$PGB_PORT" "${pids[-1]}" 20

# Clients through PgBouncer: half idle, half in a loop of short transactions.
"$PYTHON" - "$PGB_PORT" "$NCLIENTS" >"$dir/clients.log" 2>&1 <<'PY' &
import sys, time, psycopg2
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = [psycopg2.connect(host="127.0.0.1", port=port, dbname="bench" if i % 2 else "appdb", user="postgres") for i in range(n)]
for c in conns: c.autocommit = True
deadline = time.time() + 600
while time.time() < deadline:
    for c in conns[::2]:
        c.cursor().execute("SELECT 1")
    time.sleep(0.05)
PY
pids+=($!)
sleep 2

dsn="postgres://pgbouncer@127.0.0.1:$PGB_PORT/pgbouncer?sslmode=disable"
build_pgvigil "$LOGDIR/cargo-build.log" || die "pgvigil build failed"
install -m 0755 "$PGVIGIL_BIN" "$BINDIR/pgvigil"
# pgvigil always watches a PostgreSQL too (postgres.dsn is required), so its scrape also
# runs the PostgreSQL collectors; its own pgvigil_scrape_collector_duration_seconds
# {collector="pgbouncer"} is printed beside the totals.
printf '[server]\nlisten = "127.0.0.1:%s"\n[postgres]\ndsn = "postgresql://pgvigil@127.0.0.1:%s/postgres?sslmode=disable"\n[pgbouncer]\ndsns = ["%s"]\n' \
  "$PGV_PORT" "$PGPORT" "$dsn" >"$dir/pgvigil.toml"

measure() { # NAME PORT PID
  local name=$1 port=$2 pid=$3 i t0 t1 out
  out=$dir/$name
  : >"$out.times"
  t0=$(cpu_ticks "$pid")
  for ((i = 0; i < SCRAPES; i++)); do
    curl -s -m 10 -o "$out.metrics" -w '%{time_total}\n' "http://127.0.0.1:$port/metrics" >>"$out.times"
  done
  t1=$(cpu_ticks "$pid")
  printf '%s median_ms=%s cpu_ms_per_scrape=%s rss_kb=%s series=%s\n' "$name" \
    "$(sort -n "$out.times" | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)] * 1000}')" \
    "$(awk -v d=$((t1 - t0)) -v n="$SCRAPES" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d * 1000 / hz / n}')" \
    "$(status_kb "$pid" VmRSS)" "$(grep -vc '^#' "$out.metrics")"
}

# setpriv execs (runuser would stay the parent), so $! is the measured process itself.
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups --)
"${AS_POSTGRES[@]}" "$BINDIR/pgbouncer_exporter" --web.listen-address="127.0.0.1:$PGBEXP_PORT" \
  --pgBouncer.connectionString="$dsn" >"$dir/pgbouncer_exporter.log" 2>&1 &
pids+=($!)
wait_port "$PGBEXP_PORT" "${pids[-1]}" 20
"${AS_POSTGRES[@]}" "$BINDIR/pgvigil" run -c "$dir/pgvigil.toml" >"$dir/pgvigil.log" 2>&1 &
pids+=($!)
wait_http_200 "http://127.0.0.1:$PGV_PORT/readyz" "${pids[-1]}" 30
sleep 1
echo "# pgbouncer bench — $(date -u +%FT%TZ) — $SCRAPES scrapes per target, $NCLIENTS clients"
echo "# $(pgbouncer --version | head -n1); $("$BINDIR/pgbouncer_exporter" --version 2>&1 | head -n1)"
m_exp=$(measure pgbouncer_exporter "$PGBEXP_PORT" "${pids[-2]}")
m_pv=$(measure pgvigil "$PGV_PORT" "${pids[-1]}")
echo "$m_exp"; echo "$m_pv"
echo "pgvigil's pgbouncer collector alone: $(awk '/^pgvigil_scrape_collector_duration_seconds\{collector="pgbouncer/ {printf "%.2f ms ", $2 * 1000}' "$dir/pgvigil.metrics")"
for k in median_ms cpu_ms_per_scrape rss_kb; do
  a=$(sed -n "s/.*$k=\([0-9.]*\).*/\1/p" <<<"$m_pv"); b=$(sed -n "s/.*$k=\([0-9.]*\).*/\1/p" <<<"$m_exp")
  printf 'ratio pgvigil / pgbouncer_exporter %-18s %s\n' "$k" "$(div "$a" "$b" %.3f)"
done
echo
echo "names, labels and values (bench/compat.py):"
"$PYTHON" "$BENCH_SRC/compat.py" "$dir/pgbouncer_exporter.metrics" "$dir/pgvigil.metrics" --prefix pgbouncer_ | sed 's/^/  /'
