#!/usr/bin/env bash
# API proxy benchmark: pgvigil's [api_proxy] against nginx as a reverse proxy
# with a JSON access log, side by side in one run, in front of the same
# upstream (an nginx serving a PostgREST-like `GET /articles`).
#
# Targets (all three up at once, measured one after the other with wrk):
#   direct       wrk -> upstream nginx                       127.0.0.1:59301
#   nginx-proxy  wrk -> nginx (proxy_pass, keepalive 64,
#                JSON access log to a file) -> upstream      127.0.0.1:59302
#   pgvigil      wrk -> pgvigil run -c <config> (metrics +
#                one access line per request on stdout,
#                redirected to a file) -> upstream           127.0.0.1:59300
# Per target: a short warm-up (not reported), then
#   load   wrk -t2 -c32 -d10s --latency: max requests/s, p50/p99
#   paced  wrk -t1 -c4 -d10s with a 4 ms pause after each response (Lua
#          delay()): ~1000 requests/s, p50/p99, and what each proxy adds to
#          the direct latencies
# ROUNDS (3; --smoke: 1) times each, the targets taking turns; medians reported,
# plus CPU seconds of each server process during each run (/proc/PID/stat),
# host CPU busy/steal, RSS after the load run, and a check that pgvigil's
# access lines and pgvigil_api_requests_total match the requests wrk sent.
#
# Bounded: the whole script re-execs itself under `timeout` (BENCH_TIMEOUT),
# every step has its own timeout, only 127.0.0.1 is used, and everything it
# starts is stopped on exit; its temp dir is removed.
#
# Usage (as root):  bench/proxy.sh [--smoke]      (--smoke: 2 s runs, 1 round)
#                   TLS=1 bench/proxy.sh          (both proxies over TLS)
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
if [ -z "${PGVIGIL_PROXY_BENCH_WATCHDOG:-}" ]; then
  export PGVIGIL_PROXY_BENCH_WATCHDOG=1 SMOKE
  exec timeout -k 30 "${BENCH_TIMEOUT:-5400}" bash "$0"
fi

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages with apt-get)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NGINX=/usr/sbin/nginx
WRK=/usr/bin/wrk
WRK_LUA=$BENCH_SRC/proxy-wrk.lua

# Ports: loopback only, none a default one (see lib.sh for the others).
PX_PGVIGIL_PORT=${PX_PGVIGIL_PORT:-59300}   # pgvigil [api_proxy] listen
PX_UPSTREAM_PORT=${PX_UPSTREAM_PORT:-59301} # upstream nginx (PostgREST stand-in)
PX_NGINX_PORT=${PX_NGINX_PORT:-59302}       # nginx reverse proxy
PX_METRICS_PORT=${PX_METRICS_PORT:-59433}   # pgvigil [server] listen (/metrics)

if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-2} PACED_DURATION=${PACED_DURATION:-2} WARMUP=${WARMUP:-1}
else
  DURATION=${DURATION:-10} PACED_DURATION=${PACED_DURATION:-10} WARMUP=${WARMUP:-2}
fi
LOAD_THREADS=${LOAD_THREADS:-2} LOAD_CONNS=${LOAD_CONNS:-32}
PACED_THREADS=${PACED_THREADS:-1} PACED_CONNS=${PACED_CONNS:-4} PACE_MS=${PACE_MS:-4}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
NGINX_PROXY_WORKERS=${NGINX_PROXY_WORKERS:-auto}
PERF=${PERF:-0}
if [ "$SMOKE" = 1 ]; then ROUNDS=${ROUNDS:-1}; else ROUNDS=${ROUNDS:-3}; fi
REDO=${REDO:-$ROUNDS}                       # rounds run again because of outside load, at most
NOISE_PCT=${NOISE_PCT:-10}                  # "outside load": other processes above this % of the host
QUIET_ROUND_WAIT=${QUIET_ROUND_WAIT:-120}   # wait for a quiet host before each round, at most (s)
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS must be 1..99" >&2; exit 2; }

TARGETS=(direct nginx-proxy pgvigil)
# TLS=1: both proxies terminate TLS (the same self-signed P-256 certificate, TLS 1.2/1.3),
# wrk speaks https to them; the upstream stays plain HTTP, as PostgREST on the pod's loopback.
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then SCHEME=https; else SCHEME=http; fi
PATH_Q=/articles

# ---------------------------------------------------------------- small helpers

kv_get() { local v; v=$(grep -m1 "^$2=" "$1" 2>/dev/null | cut -d= -f2-) || true; echo "${v:-n/a}"; }

# us -> ms with 3 decimals (n/a passes through)
ms() { awk -v u="$1" 'BEGIN { if (u == "" || u == "n/a") print "n/a"; else printf "%.3f\n", u / 1000 }'; }
# a - b in ms from two us values, signed
dms() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a") { print "n/a"; exit }
    printf "%+.3f\n", (a - b) / 1000 }'
}

# ticks (utime+stime, all threads) of a process and its direct children:
# nginx's master + workers. 0 when the process is gone.
tree_ticks() {
  local p sum=0 t
  [ -n "$1" ] || { echo 0; return; }
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    t=$(cpu_ticks "$p" 2>/dev/null || echo 0)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
# "utime_ticks stime_ticks context_switches" of a process (all threads) and its
# direct children. Context switches are summed over live threads only (a
# thread that exited takes its count along), so they are approximate.
tree_counters() {
  local p u=0 st=0 cs=0 a b c
  [ -n "$1" ] || { echo "0 0 0"; return; }
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    c=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches:/ {s += $2} END {print s + 0}')
    u=$((u + a)); st=$((st + b)); cs=$((cs + c))
  done
  echo "$u $st $cs"
}
# "rss_kb pss_kb processes" of a process and its direct children. RSS counts
# pages shared between nginx's master and workers once per process; PSS
# (smaps_rollup) splits them, so the PSS sum is the tree's real footprint.
tree_mem() {
  local p rss=0 pss=0 n=0 r q
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    r=$(status_kb "$p" VmRSS 2>/dev/null || true)
    [ -n "$r" ] || continue
    q=$(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    rss=$((rss + r)); pss=$((pss + ${q:-0})); n=$((n + 1))
  done
  echo "$rss $pss $n"
}
# host CPU: "busy_ticks total_ticks steal_ticks" from /proc/stat
host_cpu() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t, $9 }' /proc/stat
}

# CPU seconds (user+sys) of this shell's waited-for children so far: the
# `times` builtin must run in this shell, not in a subshell (a fork starts at 0).
# Sets CHILD_CPU (call it directly, never as $(children_cpu)).
children_cpu() {
  times >"$WORK/times.txt"
  CHILD_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, x, /[ms]/); t += x[1] * 60 + x[2] }; printf "%.2f\n", t }' "$WORK/times.txt")
}

# wait_quiet : this is a shared 2-core machine; wait (at most QUIET_WAIT s) until
# the host is nearly idle (busy < QUIET_BUSY % over 3 s), so no other job's
# compile or test run overlaps the measurements. Measures anyway after that.
wait_quiet() {
  local limit=${QUIET_WAIT:-600} max=${QUIET_BUSY:-15} waited=0 a b busy
  while :; do
    a=$(host_cpu); sleep 3; b=$(host_cpu)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    QUIET_NOTE="host busy ${busy}% before measuring (waited ${waited}s)"
    ((busy < max)) && return 0
    ((waited == 0)) && log "host busy ${busy}% (other jobs?); waiting until below ${max}% (at most ${limit}s)"
    if ((waited >= limit)); then
      QUIET_NOTE="$QUIET_NOTE — NOT QUIET: other processes competed for the CPUs"
      log "still ${busy}% busy after ${limit}s; measuring anyway"; return 0
    fi
    waited=$((waited + 3))
  done
}

# ---------------------------------------------------------------- tools and binary

ensure_tools() {
  ensure_packages nginx wrk curl
  local f
  for f in "$NGINX" "$WRK" /usr/bin/curl; do [ -x "$f" ] || die "$f missing after install"; done
  [ -f "$WRK_LUA" ] || die "$WRK_LUA missing"
}

# Build (if missing or older than the sources) unless PGVIGIL_BIN is given.
ensure_pgvigil_bin() {
  build_pgvigil "$RES/cargo-build.log" || die "$PGVIGIL_NOTE"
}

# ---------------------------------------------------------------- configs

# ~2 KB of PostgREST-like JSON: 25 rows, as for `Content-Range: 0-24/*`.
write_body() {
  local i sep=""
  {
    printf '['
    for ((i = 1; i <= 25; i++)); do
      printf '%s{"id":%d,"title":"Article %d","author_id":%d,"published_at":"2026-11-%02dT10:00:00Z"}' \
        "$sep" "$i" "$i" $((i % 7 + 1)) $((i % 28 + 1))
      sep=","
    done
    printf ']'
  } >"$WORK/articles.json"
  BODY_BYTES=$(stat -c %s "$WORK/articles.json")
  grep -q "[\$']" "$WORK/articles.json" && die "body must not contain \$ or ' (it goes into nginx's return)"
  return 0
}

# Lines common to both nginx configs. $1: instance dir.
nginx_head() {
  local d=$1 workers=$2
  cat <<EOF
# written by bench/proxy.sh
$([ "$(id -u)" = 0 ] && echo "user root;")
daemon off;
master_process on;
worker_processes $workers;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
EOF
  cat <<EOF
http {
  client_body_temp_path $d/tmp/body;
  proxy_temp_path       $d/tmp/proxy;
  fastcgi_temp_path     $d/tmp/fastcgi;
  uwsgi_temp_path       $d/tmp/uwsgi;
  scgi_temp_path        $d/tmp/scgi;
  server_tokens off;
  keepalive_timeout 75s;
  # nginx closes a client connection after 1000 requests by default; PostgREST
  # and pgvigil do not, so neither nginx here does either.
  keepalive_requests 1000000;
EOF
}

write_configs() {
  local d ngx_tls='' pgv_tls='' ngx_ssl=''
  for d in "$WORK/upstream" "$WORK/nginx-proxy"; do mkdir -p "$d/tmp"; done
  if [ "$TLS" = 1 ]; then
    timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
      -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null || die "openssl could not make a certificate"
    chmod 600 "$WORK/tls.key"
    ngx_ssl=' ssl'
    ngx_tls="    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;"
    pgv_tls="tls_cert_file = \"$WORK/tls.crt\"
tls_key_file = \"$WORK/tls.key\""
  fi

  # Upstream: the PostgREST stand-in. The body is served from memory (return),
  # no access log: it must cost as little as possible.
  d=$WORK/upstream
  {
    nginx_head "$d" "$UPSTREAM_WORKERS"
    cat <<EOF
  access_log off;
  server {
    listen 127.0.0.1:$PX_UPSTREAM_PORT backlog=4096;
    location = $PATH_Q {
      default_type application/json;
      add_header Content-Range "0-24/*" always;
      return 200 '$(cat "$WORK/articles.json")';
    }
    location / { return 404; }
  }
}
EOF
  } >"$d/nginx.conf"

  # nginx as a reverse proxy with a JSON access log (one line per request,
  # to a file, unbuffered: nginx's default) and upstream keepalive. It sets the
  # same request headers pgvigil sets (request id, X-Forwarded-*).
  d=$WORK/nginx-proxy
  {
    nginx_head "$d" "$NGINX_PROXY_WORKERS"
    cat <<EOF
  log_format api_json escape=json '{"ts":"\$time_iso8601","request_id":"\$request_id",'
    '"method":"\$request_method","path":"\$uri","status":\$status,"bytes":\$body_bytes_sent,'
    '"request_time":\$request_time,"upstream_response_time":"\$upstream_response_time"}';
  upstream postgrest {
    server 127.0.0.1:$PX_UPSTREAM_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PX_NGINX_PORT$ngx_ssl backlog=4096;
$ngx_tls
    access_log $d/access.log api_json;
    location / {
      proxy_pass http://postgrest;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Proto \$scheme;
      add_header X-Request-Id \$request_id always;
    }
  }
}
EOF
  } >"$d/nginx.conf"

  PGVIGIL_CONF=$WORK/pgvigil.toml
  cat >"$PGVIGIL_CONF" <<EOF
# written by bench/proxy.sh
[server]
listen = "127.0.0.1:$PX_METRICS_PORT"
[postgres]
dsn = "postgresql://postgres@127.0.0.1:1/postgres"   # nothing listens: pg_up 0, irrelevant here
[api_proxy]
listen = "127.0.0.1:$PX_PGVIGIL_PORT"
upstream = "http://127.0.0.1:$PX_UPSTREAM_PORT"
$pgv_tls
[audit]
stdout = true
EOF
  cp "$WORK/upstream/nginx.conf" "$RES/upstream.nginx.conf"
  cp "$WORK/nginx-proxy/nginx.conf" "$RES/nginx-proxy.nginx.conf"
  cp "$PGVIGIL_CONF" "$RES/pgvigil.toml"
}

# ---------------------------------------------------------------- processes

UP_PID='' NGX_PID='' PGV_PID='' BG_PID=''
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  stop_pid "$BG_PID"; BG_PID=
  stop_pid "$PGV_PID"; PGV_PID=
  stop_pid "$NGX_PID"; NGX_PID=
  stop_pid "$UP_PID"; UP_PID=
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ "${KEEP_TMP:-0}" != 1 ]; then rm -rf "$WORK"; fi
  exit "$rc"
}

check_ports() {
  local p busy=()
  for p in "$PX_UPSTREAM_PORT:upstream" "$PX_NGINX_PORT:nginx-proxy" "$PX_PGVIGIL_PORT:pgvigil proxy" \
    "$PX_METRICS_PORT:pgvigil metrics"; do
    port_open "${p%%:*}" && busy+=("127.0.0.1:${p%%:*} (${p#*:})")
  done
  [ ${#busy[@]} -eq 0 ] || die "port(s) already in use: ${busy[*]}; stop what listens there or set PX_*_PORT"
}

# start_nginx DIR PORT : sets REPLY to the master's pid
start_nginx() {
  local d=$1 port=$2
  timeout 20 "$NGINX" -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/nginx-t.log" 2>&1 ||
    { cat "$d/nginx-t.log" >&2; die "nginx -t failed for $d/nginx.conf"; }
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >>"$d/stdout.log" 2>&1 &
  REPLY=$!
  wait_port "$port" "$REPLY" 20 || { tail -n 20 "$d/error.log" >&2 || true; die "nginx ($d) did not come up"; }
}

start_all() {
  start_nginx "$WORK/upstream" "$PX_UPSTREAM_PORT"; UP_PID=$REPLY
  start_nginx "$WORK/nginx-proxy" "$PX_NGINX_PORT"; NGX_PID=$REPLY
  "$PGVIGIL_BIN" run -c "$PGVIGIL_CONF" >"$WORK/pgvigil.stdout" 2>"$WORK/pgvigil.stderr" &
  PGV_PID=$!
  if ! { wait_port "$PX_PGVIGIL_PORT" "$PGV_PID" 30 && wait_port "$PX_METRICS_PORT" "$PGV_PID" 30; }; then
    tail -n 20 "$WORK/pgvigil.stdout" "$WORK/pgvigil.stderr" >&2 || true
    die "pgvigil did not open its ports"
  fi
  log "up: upstream nginx pid $UP_PID ($UPSTREAM_WORKERS worker(s)), nginx-proxy pid $NGX_PID" \
    "($(pgrep -c -P "$NGX_PID") workers), pgvigil pid $PGV_PID"
}

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$PX_UPSTREAM_PORT$PATH_Q" ;;
    nginx-proxy) echo "$SCHEME://127.0.0.1:$PX_NGINX_PORT$PATH_Q" ;;
    pgvigil) echo "$SCHEME://127.0.0.1:$PX_PGVIGIL_PORT$PATH_Q" ;;
  esac
}

# One request per target with curl: status 200, the body's size, the
# Content-Range header passed through. Counted in the request totals.
SENT_PGVIGIL=0 SENT_NGINX=0
sanity() {
  local t out code size
  for t in "${TARGETS[@]}"; do
    out=$RES/$t.sanity
    code=$(curl -k -s -m 5 -D "$out.headers" -o "$out.body" -w '%{http_code}' "$(url_of "$t")" || true)
    size=$(stat -c %s "$out.body" 2>/dev/null || echo 0)
    [ "$code" = 200 ] || die "$t: GET $PATH_Q returned ${code:-nothing}, not 200"
    [ "$size" = "$BODY_BYTES" ] || die "$t: body is $size bytes, expected $BODY_BYTES"
    grep -qi '^content-range: 0-24/\*' "$out.headers" || die "$t: no Content-Range: 0-24/* in the response"
    case $t in pgvigil) SENT_PGVIGIL=$((SENT_PGVIGIL + 1)) ;; nginx-proxy) SENT_NGINX=$((SENT_NGINX + 1)) ;; esac
  done
  log "sanity: all three answer 200 with the $BODY_BYTES-byte body and Content-Range"
}

# ---------------------------------------------------------------- measuring

# run_wrk TARGET KIND [OUT] : KIND load | paced | warmup. Writes OUT.wrk.txt and
# OUT.kv (RESULT fields, CPU seconds per server process, host busy/steal).
run_wrk() {
  local t=$1 kind=$2 out=$RES/${3:-$1.$2} url th c d pace=0
  url=$(url_of "$t")
  case $kind in
    load) th=$LOAD_THREADS c=$LOAD_CONNS d=$DURATION ;;
    warmup) th=$LOAD_THREADS c=$LOAD_CONNS d=$WARMUP ;;
    paced) th=$PACED_THREADS c=$PACED_CONNS d=$PACED_DURATION pace=$PACE_MS ;;
  esac
  local up0 ng0 pv0 h0 up1 ng1 pv1 h1
  up0=$(tree_ticks "$UP_PID"); ng0=$(tree_ticks "$NGX_PID"); pv0=$(tree_ticks "$PGV_PID"); h0=$(host_cpu)
  local own_pid='' c0 c1
  case $t in pgvigil) own_pid=$PGV_PID ;; nginx-proxy) own_pid=$NGX_PID ;; esac
  c0=$(tree_counters "$own_pid")
  local rc=0 w0 w1
  children_cpu; w0=$CHILD_CPU
  PACE_MS=$pace timeout $((d + 30)) "$WRK" -t"$th" -c"$c" -d"${d}s" --latency -s "$WRK_LUA" "$url" \
    >"$out.wrk.txt" 2>&1 || rc=$?
  children_cpu; w1=$CHILD_CPU
  c1=$(tree_counters "$own_pid")
  up1=$(tree_ticks "$UP_PID"); ng1=$(tree_ticks "$NGX_PID"); pv1=$(tree_ticks "$PGV_PID"); h1=$(host_cpu)
  local res; res=$(grep -m1 '^RESULT ' "$out.wrk.txt" | cut -d' ' -f2- || true)
  [ -n "$res" ] || { tail -n 20 "$out.wrk.txt" >&2; die "$t $kind: wrk printed no result (rc $rc)"; }
  {
    echo "target=$t"; echo "kind=$kind"; echo "wrk_rc=$rc"
    echo "cmd=PACE_MS=$pace wrk -t$th -c$c -d${d}s --latency -s $WRK_LUA $url"
    tr ' ' '\n' <<<"$res"
    awk -v a="$up0" -v b="$up1" -v hz="$CLK_TCK" 'BEGIN {printf "cpu_upstream_s=%.2f\n", (b - a) / hz}'
    awk -v a="$ng0" -v b="$ng1" -v hz="$CLK_TCK" 'BEGIN {printf "cpu_nginx_proxy_s=%.2f\n", (b - a) / hz}'
    awk -v a="$pv0" -v b="$pv1" -v hz="$CLK_TCK" 'BEGIN {printf "cpu_pgvigil_s=%.2f\n", (b - a) / hz}'
    awk -v a="$w0" -v b="$w1" 'BEGIN {printf "cpu_wrk_s=%.2f\n", b - a}'
    # other: host busy minus the three servers and wrk: anything else on the machine
    awk -v a="$h0" -v b="$h1" -v n=$((up1 - up0 + ng1 - ng0 + pv1 - pv0)) -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" \
      -v hz="$CLK_TCK" -v cpus="$(nproc)" 'BEGIN {
      split(a, x, " "); split(b, y, " "); tot = y[2] - x[2]
      if (tot <= 0) { print "host_busy_pct=n/a"; print "host_steal_pct=n/a"; print "other_cpu_pct=n/a"; exit }
      printf "host_busy_pct=%.0f\nhost_steal_pct=%.1f\n", 100 * (y[1] - x[1]) / tot, 100 * (y[3] - x[3]) / tot
      o = 100 * ((y[1] - x[1]) - n - w * hz) / tot; if (o < 0) o = 0
      printf "other_cpu_pct=%.0f\n", o }'
  } >"$out.kv"
  local n; n=$(kv_get "$out.kv" requests)
  case $t in
    pgvigil) SENT_PGVIGIL=$((SENT_PGVIGIL + n)) ;;
    nginx-proxy) SENT_NGINX=$((SENT_NGINX + n)) ;;
  esac
  # the proxy's own CPU per request, the upstream's utilisation, all errors
  local own=n/a secs up errs=0 e
  case $t in pgvigil) own=$(kv_get "$out.kv" cpu_pgvigil_s) ;; nginx-proxy) own=$(kv_get "$out.kv" cpu_nginx_proxy_s) ;; esac
  secs=$(awk -v u="$(kv_get "$out.kv" duration_us)" 'BEGIN {print u / 1e6}')
  up=$(kv_get "$out.kv" cpu_upstream_s)
  for e in connect read write status timeout; do errs=$((errs + $(kv_get "$out.kv" "err_$e"))); done
  local extra
  extra="proxy_cpu_s=$own
proxy_cpu_us_per_req=$(div "$(awk -v s="$own" 'BEGIN { if (s == "n/a") print "n/a"; else print s * 1e6 }')" "$n" %.1f)
proxy_cpu_pct=$(div "$(awk -v s="$own" 'BEGIN { if (s == "n/a") print "n/a"; else print s * 100 }')" "$secs" %.0f)
upstream_cpu_pct=$(div "$(awk -v s="$up" 'BEGIN {print s * 100}')" "$secs" %.0f)
errors=$errs"
  if [ -n "$own_pid" ]; then
    extra="$extra
$(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$CLK_TCK" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      if (n <= 0) exit
      printf "proxy_user_us_per_req=%.1f\nproxy_sys_us_per_req=%.1f\nproxy_ctxsw_per_req=%.2f\n",
        (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n, (y[3] - x[3]) / n }')"
  fi
  echo "$extra" >>"$out.kv"
  [ "$kind" = warmup ] ||
    log "$t $kind: $(kv_get "$out.kv" rps) req/s, p50 $(ms "$(kv_get "$out.kv" p50_us)") ms, p99 $(ms "$(kv_get "$out.kv" p99_us)") ms, errors $(kv_get "$out.kv" errors)"
}

# after the load run of a proxy: its memory
# record_rss TARGET KVFILE
record_rss() {
  local t=$1 f=$2
  local r q n
  case $t in
    pgvigil)
      read -r r q n < <(tree_mem "$PGV_PID")
      printf 'rss_kb=%s\npss_kb=%s\n' "$r" "$q" >>"$f"
      echo "hwm_kb=$(status_kb "$PGV_PID" VmHWM)" >>"$f"
      echo "threads=$(awk '/^Threads:/ {print $2}' "/proc/$PGV_PID/status")" >>"$f" ;;
    nginx-proxy)
      read -r r q n < <(tree_mem "$NGX_PID")
      printf 'rss_kb=%s\npss_kb=%s\nprocesses=%s\n' "$r" "$q" "$n" >>"$f" ;;
  esac
}

# PERF=1: profile each proxy under the load run's settings (not counted in the table).
profile() {
  command -v perf >/dev/null || { log "PERF=1 but perf is not installed; skipping"; return 0; }
  local t pids secs=$((DURATION > 4 ? DURATION - 2 : 2))
  for t in nginx-proxy pgvigil; do
    case $t in pgvigil) pids=$PGV_PID ;; nginx-proxy) pids=$(pgrep -P "$NGX_PID" | paste -sd,) ;; esac
    log "perf: $t (pids $pids), ${secs}s under load"
    run_wrk "$t" load "$t.perf" &
    BG_PID=$!
    sleep 1
    timeout $((secs + 60)) perf record -q -F 999 -p "$pids" -o "$WORK/perf-$t.data" -- sleep "$secs" \
      >"$RES/perf-$t.record.log" 2>&1 || log "perf record $t failed (see $RES/perf-$t.record.log)"
    wait "$BG_PID" || true; BG_PID=
    # the subshell's request count is lost: read it back
    local n; n=$(kv_get "$RES/$t.perf.kv" requests)
    case $t in pgvigil) SENT_PGVIGIL=$((SENT_PGVIGIL + n)) ;; nginx-proxy) SENT_NGINX=$((SENT_NGINX + n)) ;; esac
    {
      echo "# perf record -F 999 -p $pids, ${secs}s during wrk -t$LOAD_THREADS -c$LOAD_CONNS; by dso"
      timeout 300 perf report -i "$WORK/perf-$t.data" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep . | head -20
      echo
      echo "# by symbol (top 60)"
      timeout 300 perf report -i "$WORK/perf-$t.data" --stdio --no-children --sort dso,symbol 2>/dev/null | grep -v '^#' | grep . | head -60
    } >"$RES/perf-$t.txt" || true
  done
}

# measure_rounds KIND : ROUNDS rounds of KIND (load | paced). The targets take
# turns within a round, so a burst of outside load hits one round rather than
# one target. Before each round, wait (at most QUIET_ROUND_WAIT s) for a quiet
# host; a round during which anything else used more than NOISE_PCT % of the
# host is set aside (files *.noisyN-rR.*) and run again, at most REDO times.
REDONE_load=0 REDONE_paced=0
measure_rounds() {
  local kind=$1 r=1 redo=0 t f noisy
  while ((r <= ROUNDS)); do
    QUIET_WAIT=$QUIET_ROUND_WAIT wait_quiet
    for t in "${TARGETS[@]}"; do
      run_wrk "$t" "$kind" "$t.$kind.r$r"
      [ "$kind" = load ] && record_rss "$t" "$RES/$t.load.r$r.kv"
      sleep 1
    done
    noisy=""
    for t in "${TARGETS[@]}"; do
      awk -v o="$(kv_get "$RES/$t.$kind.r$r.kv" other_cpu_pct)" -v m="$NOISE_PCT" 'BEGIN { exit !(o != "n/a" && o + 0 > m) }' &&
        noisy="$noisy $t($(kv_get "$RES/$t.$kind.r$r.kv" other_cpu_pct)%)"
    done
    if [ -n "$noisy" ] && ((redo < REDO)); then
      redo=$((redo + 1))
      log "$kind round $r: other processes used the host during$noisy; setting it aside and running it again ($redo/$REDO)"
      for t in "${TARGETS[@]}"; do
        for f in "$RES/$t.$kind.r$r".*; do mv "$f" "${f/.$kind.r$r./.$kind.noisy$redo-r$r.}"; done
      done
      continue
    fi
    r=$((r + 1))
  done
  printf -v "REDONE_$kind" '%s' "$redo"
}

# median_kv OUT KV... : one kv file from several rounds. Numbers: the median
# (errors: the sum); anything else: the first round's value. rps, p50_us and
# p99_us also get a KEY_rounds=a/b/c line.
median_kv() {
  local out=$1; shift
  awk -v OFMT=%.10g -v CONVFMT=%.10g '
    FNR == 1 { nf++ }
    {
      k = $0; sub(/=.*/, "", k); v = substr($0, length(k) + 2)
      if (!(k in seen)) { order[++n] = k; seen[k] = 1; first[k] = v }
      cnt[k]++; vals[k, cnt[k]] = v
      if (v !~ /^[-+]?[0-9]+(\.[0-9]+)?$/) nonnum[k] = 1
    }
    END {
      for (i = 1; i <= n; i++) {
        k = order[i]; m = cnt[k]
        if ((k in nonnum) || m == 1) { print k "=" first[k]; continue }
        if (k == "errors" || k ~ /^err_/) { s = 0; for (j = 1; j <= m; j++) s += vals[k, j]; print k "=" s; continue }
        for (j = 1; j <= m; j++) a[j] = vals[k, j] + 0
        for (j = 2; j <= m; j++) { x = a[j]; l = j - 1; while (l > 0 && a[l] > x) { a[l + 1] = a[l]; l-- }; a[l + 1] = x }
        print k "=" ((m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2)
        if (k == "rps" || k == "p50_us" || k == "p99_us") {
          s = vals[k, 1]; for (j = 2; j <= m; j++) s = s "/" vals[k, j]; print k "_rounds=" s
        }
      }
      print "rounds=" nf
    }' "$@" >"$out"
}

# ---------------------------------------------------------------- checks

# After every run: pgvigil's counters (before it stops), then its access lines
# and nginx's (after they stop, so everything is flushed).
check_counts() {
  curl -s -m 10 "http://127.0.0.1:$PX_METRICS_PORT/metrics" >"$RES/pgvigil.metrics" || true
  grep '^pgvigil_api_requests_total' "$RES/pgvigil.metrics" >"$RES/pgvigil_api_requests_total.txt" || true
  METRIC_SUM=$(awk '{s += $NF} END {printf "%d\n", s}' "$RES/pgvigil_api_requests_total.txt")
  PGV_CPU_TOTAL=$(awk -v t="$(tree_ticks "$PGV_PID")" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
  NGX_CPU_TOTAL=$(awk -v t="$(tree_ticks "$NGX_PID")" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
  UP_CPU_TOTAL=$(awk -v t="$(tree_ticks "$UP_PID")" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
  PGV_ALIVE=no; kill -0 "$PGV_PID" 2>/dev/null && PGV_ALIVE=yes
  NGX_ALIVE=no; kill -0 "$NGX_PID" 2>/dev/null && NGX_ALIVE=yes
  stop_pid "$PGV_PID"; PGV_PID=
  stop_pid "$NGX_PID"; NGX_PID=
  ACCESS_LINES=$(grep -c '"kind":"access"' "$WORK/pgvigil.stdout" || true)
  OTHER_LINES=$(grep -vc '"kind":"access"' "$WORK/pgvigil.stdout" || true)
  NGX_LINES=$(wc -l <"$WORK/nginx-proxy/access.log")
  PGV_STDOUT_BYTES=$(stat -c %s "$WORK/pgvigil.stdout")
  NGX_LOG_BYTES=$(stat -c %s "$WORK/nginx-proxy/access.log")
  {
    echo "# pgvigil stdout: first access line, last access line, non-access lines (first 10)"
    grep -m1 '"kind":"access"' "$WORK/pgvigil.stdout" || true
    grep '"kind":"access"' "$WORK/pgvigil.stdout" | tail -n 1 || true
    grep -v '"kind":"access"' "$WORK/pgvigil.stdout" | head -n 10 || true
    echo "# pgvigil stderr (first 10 lines)"
    head -n 10 "$WORK/pgvigil.stderr" || true
    echo "# nginx-proxy access.log: first and last line"
    head -n 1 "$WORK/nginx-proxy/access.log"; tail -n 1 "$WORK/nginx-proxy/access.log"
    echo "# nginx error logs (last 10 lines each)"
    tail -n 10 "$WORK/nginx-proxy/error.log" "$WORK/upstream/error.log" 2>/dev/null || true
  } >"$RES/log-samples.txt"
}

# ---------------------------------------------------------------- report

context() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cpus ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); upstream worker_processes $UPSTREAM_WORKERS, proxy worker_processes $NGINX_PROXY_WORKERS"
    echo "wrk: $("$WRK" -v 2>&1 | awk 'NR == 1 {print $1, $2}')"
    echo "pgvigil: $PGVIGIL_BIN ($("$PGVIGIL_BIN" --version 2>/dev/null || echo '?'), built $(date -u -r "$PGVIGIL_BIN" +%FT%TZ))"
    echo "repo: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$REPO_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' +uncommitted changes in src')"
    echo "body: $BODY_BYTES bytes JSON, Content-Range: 0-24/*"
    echo "load: wrk -t$LOAD_THREADS -c$LOAD_CONNS -d${DURATION}s --latency; paced: wrk -t$PACED_THREADS -c$PACED_CONNS -d${PACED_DURATION}s, delay() $PACE_MS ms; warm-up ${WARMUP}s per target; $ROUNDS round(s)$( ((ROUNDS > 1)) && echo ', targets interleaved, medians reported')"
    echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg); ${QUIET_NOTE:-}"
  } >"$RES/context.txt"
}

summary() {
  local f=$RES/summary.txt t k
  local dp50 dp99 np99a pp99a np50a pp50a
  dp50=$(kv_get "$RES/direct.paced.kv" p50_us); dp99=$(kv_get "$RES/direct.paced.kv" p99_us)
  np99a=$(dms "$(kv_get "$RES/nginx-proxy.paced.kv" p99_us)" "$dp99")
  pp99a=$(dms "$(kv_get "$RES/pgvigil.paced.kv" p99_us)" "$dp99")
  np50a=$(dms "$(kv_get "$RES/nginx-proxy.paced.kv" p50_us)" "$dp50")
  pp50a=$(dms "$(kv_get "$RES/pgvigil.paced.kv" p50_us)" "$dp50")
  local rps_ratio; rps_ratio=$(div "$(kv_get "$RES/pgvigil.load.kv" rps)" "$(kv_get "$RES/nginx-proxy.load.kv" rps)" %.3f)
  {
    echo "# pgvigil API proxy bench — $(date -u +%FT%TZ)$([ "$SMOKE" = 1 ] && echo ' — SMOKE (2 s runs)')"
    sed 's/^/# /' "$RES/context.txt"
    echo
    echo "max throughput: wrk -t$LOAD_THREADS -c$LOAD_CONNS -d${DURATION}s$( ((ROUNDS > 1)) && echo ", median of $ROUNDS rounds")"
    printf '%-12s %9s %8s %8s %8s %6s %11s %10s %10s %7s %8s %6s %6s\n' target req/s p50_ms p90_ms p99_ms errors proxy_cpu_s cpu_us/req proxy_cpu% up_cpu% wrk_cpu% busy% other%
    for t in "${TARGETS[@]}"; do
      k=$RES/$t.load.kv
      printf '%-12s %9s %8s %8s %8s %6s %11s %10s %10s %7s %8s %6s %6s\n' "$t" "$(kv_get "$k" rps)" \
        "$(ms "$(kv_get "$k" p50_us)")" "$(ms "$(kv_get "$k" p90_us)")" "$(ms "$(kv_get "$k" p99_us)")" \
        "$(kv_get "$k" errors)" "$(kv_get "$k" proxy_cpu_s)" "$(kv_get "$k" proxy_cpu_us_per_req)" \
        "$(kv_get "$k" proxy_cpu_pct)" "$(kv_get "$k" upstream_cpu_pct)" \
        "$(div "$(awk -v s="$(kv_get "$k" cpu_wrk_s)" 'BEGIN {print s * 100}')" "$(awk -v u="$(kv_get "$k" duration_us)" 'BEGIN {print u / 1e6}')" %.0f)" \
        "$(kv_get "$k" host_busy_pct)" "$(kv_get "$k" other_cpu_pct)"
    done
    echo "(CPU % are of one core; the host has $(nproc). busy%: whole host, of all cores; other%: busy minus the servers and wrk)"
    for t in nginx-proxy pgvigil; do
      k=$RES/$t.load.kv
      printf '  %-12s per request: user %s us, sys %s us, %s context switches\n' "$t" \
        "$(kv_get "$k" proxy_user_us_per_req)" "$(kv_get "$k" proxy_sys_us_per_req)" "$(kv_get "$k" proxy_ctxsw_per_req)"
    done
    echo
    echo "paced: wrk -t$PACED_THREADS -c$PACED_CONNS -d${PACED_DURATION}s, ${PACE_MS} ms pause after each response$( ((ROUNDS > 1)) && echo ", median of $ROUNDS rounds")"
    printf '%-12s %9s %8s %8s %8s %8s %8s %6s %11s %10s %6s\n' target req/s p50_ms p99_ms p999_ms +p50_ms +p99_ms errors proxy_cpu_s cpu_us/req other%
    for t in "${TARGETS[@]}"; do
      k=$RES/$t.paced.kv
      printf '%-12s %9s %8s %8s %8s %8s %8s %6s %11s %10s %6s\n' "$t" "$(kv_get "$k" rps)" \
        "$(ms "$(kv_get "$k" p50_us)")" "$(ms "$(kv_get "$k" p99_us)")" "$(ms "$(kv_get "$k" p999_us)")" \
        "$(dms "$(kv_get "$k" p50_us)" "$dp50")" "$(dms "$(kv_get "$k" p99_us)" "$dp99")" \
        "$(kv_get "$k" errors)" "$(kv_get "$k" proxy_cpu_s)" "$(kv_get "$k" proxy_cpu_us_per_req)" "$(kv_get "$k" other_cpu_pct)"
    done
    echo
    echo "memory after the load run$( ((ROUNDS > 1)) && echo " (median over rounds)"):"
    echo "  pgvigil      RSS $(kv_get "$RES/pgvigil.load.kv" rss_kb) kB, PSS $(kv_get "$RES/pgvigil.load.kv" pss_kb) kB (HWM $(kv_get "$RES/pgvigil.load.kv" hwm_kb) kB, $(kv_get "$RES/pgvigil.load.kv" threads) threads)"
    echo "  nginx-proxy  RSS $(kv_get "$RES/nginx-proxy.load.kv" rss_kb) kB, PSS $(kv_get "$RES/nginx-proxy.load.kv" pss_kb) kB (sums over $(kv_get "$RES/nginx-proxy.load.kv" processes) processes: master + workers)"
    echo "  ratio pgvigil / nginx-proxy: RSS $(div "$(kv_get "$RES/pgvigil.load.kv" rss_kb)" "$(kv_get "$RES/nginx-proxy.load.kv" rss_kb)"), PSS $(div "$(kv_get "$RES/pgvigil.load.kv" pss_kb)" "$(kv_get "$RES/nginx-proxy.load.kv" pss_kb)")"
    echo "CPU seconds over the whole run (utime+stime, /proc/PID/stat):"
    echo "  pgvigil $PGV_CPU_TOTAL s, nginx-proxy $NGX_CPU_TOTAL s (master + workers), upstream $UP_CPU_TOTAL s"
    if ((ROUNDS > 1)); then
      echo "per round (load req/s | paced p99 ms):"
      for t in "${TARGETS[@]}"; do
        printf '  %-12s %s | %s\n' "$t" "$(kv_get "$RES/$t.load.kv" rps_rounds)" \
          "$(kv_get "$RES/$t.paced.kv" p99_us_rounds | awk -F/ '{ for (i = 1; i <= NF; i++) printf "%s%.3f", (i > 1 ? "/" : ""), $i / 1000; print "" }')"
      done
    fi
    local noisy=""
    for k in "$RES"/*.load.r*.kv "$RES"/*.paced.r*.kv; do
      awk -v o="$(kv_get "$k" other_cpu_pct)" -v m="$NOISE_PCT" 'BEGIN { exit !(o != "n/a" && o + 0 > m) }' &&
        noisy="$noisy $(basename "$k" .kv)($(kv_get "$k" other_cpu_pct)%)"
    done
    ((REDONE_load + REDONE_paced > 0)) &&
      echo "rounds set aside and run again because of outside load: load $REDONE_load, paced $REDONE_paced (files *.noisy*)"
    [ -n "$noisy" ] && echo "WARNING: other processes used more than $NOISE_PCT% of the host during:$noisy — rerun when the machine is quiet"
    echo
    echo "ratios:"
    echo "  pgvigil req/s / nginx-proxy req/s (load):          $rps_ratio"
    echo "  pgvigil CPU/request / nginx-proxy CPU/request:     $(div "$(kv_get "$RES/pgvigil.load.kv" proxy_cpu_us_per_req)" "$(kv_get "$RES/nginx-proxy.load.kv" proxy_cpu_us_per_req)" %.2f) (load), $(div "$(kv_get "$RES/pgvigil.paced.kv" proxy_cpu_us_per_req)" "$(kv_get "$RES/nginx-proxy.paced.kv" proxy_cpu_us_per_req)" %.2f) (paced)"
    echo "  added p50 over direct (paced):  pgvigil $pp50a ms, nginx-proxy $np50a ms"
    echo "  added p99 over direct (paced):  pgvigil $pp99a ms, nginx-proxy $np99a ms, ratio $(div "$pp99a" "$np99a" %.2f)"
    echo "targets:"
    echo "  throughput at least nginx's:          $(awk -v r="$rps_ratio" 'BEGIN { if (r == "n/a") print "n/a"; else if (r >= 1) print "PASS"; else print "FAIL" }') ($rps_ratio)"
    echo "  p99 added < 1 ms at ~1000 req/s:       $(awk -v a="$pp99a" 'BEGIN { if (a == "n/a") print "n/a"; else if (a + 0 < 1) print "PASS"; else print "FAIL" }') ($pp99a ms at $(kv_get "$RES/pgvigil.paced.kv" rps) req/s)"
    echo
    echo "checks (the proxy recorded every request, not only forwarded it):"
    echo "  requests wrk completed + curl, to pgvigil (warm-up, load, paced$([ "$PERF" = 1 ] && echo ', perf')): $SENT_PGVIGIL"
    echo "  access lines in pgvigil's stdout:     $ACCESS_LINES ($((ACCESS_LINES - SENT_PGVIGIL)) vs wrk; $OTHER_LINES other log lines; $PGV_STDOUT_BYTES bytes)"
    echo "  sum of pgvigil_api_requests_total:    $METRIC_SUM ($((METRIC_SUM - SENT_PGVIGIL)) vs wrk)"
    sed 's/^/    /' "$RES/pgvigil_api_requests_total.txt"
    echo "  requests to nginx-proxy: $SENT_NGINX; lines in its access.log: $NGX_LINES ($((NGX_LINES - SENT_NGINX)) vs wrk; $NGX_LOG_BYTES bytes)"
    echo "  (wrk counts completed responses only; requests in flight when it stops are logged by the proxies too: at most -c more per run)"
    echo "  still running after the runs: pgvigil $PGV_ALIVE, nginx-proxy $NGX_ALIVE"
    echo
    echo "loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "build: ${BUILD_SECONDS:-0} s, measurements: ${MEASURE_SECONDS:-?} s, total: $(since "$T_TOTAL") s"
    echo "details: $RES/<target>.<load|paced>.kv (medians), <target>.<load|paced>.r<N>.{kv,wrk.txt}, <target>.warmup.*, log-samples.txt, pgvigil.metrics, *.nginx.conf, pgvigil.toml"
    [ "$PERF" = 1 ] && echo "profiles: $RES/perf-*.txt"
  } >"$f"
  cat "$f"
}

# ---------------------------------------------------------------- main

main() {
  T_TOTAL=$(now)
  trap cleanup EXIT
  trap 'exit 143' INT TERM HUP

  local stamp; stamp=$(date -u +%Y%m%dT%H%M%SZ)
  [ "$SMOKE" = 1 ] && stamp=$stamp-smoke
  RES=$BENCH_DIR/results-proxy/$stamp
  mkdir -p "$RES"
  ln -sfn "$stamp" "$BENCH_DIR/results-proxy/latest"
  log "results: $RES"

  ensure_tools
  ensure_pgvigil_bin
  check_ports

  WORK=$(mktemp -d /tmp/pgvigil-proxy-bench.XXXXXX)
  chmod 0755 "$WORK"
  write_body
  write_configs
  wait_quiet
  context
  start_all
  sanity

  local t0 t; t0=$(now)
  for t in "${TARGETS[@]}"; do run_wrk "$t" warmup; sleep 1; done
  measure_rounds load
  measure_rounds paced
  for t in "${TARGETS[@]}"; do
    median_kv "$RES/$t.load.kv" "$RES/$t.load.r"*.kv
    median_kv "$RES/$t.paced.kv" "$RES/$t.paced.r"*.kv
  done
  [ "$PERF" = 1 ] && profile
  MEASURE_SECONDS=$(since "$t0")
  sleep 1   # let the audit writer flush the last batch before the counters are read

  check_counts
  summary
  [ "$PGV_ALIVE" = yes ] && [ "$NGX_ALIVE" = yes ]
}

main
