#!/usr/bin/env bash
# Scrape latency over TLS vs plaintext: the same pgvigil binary started twice, once with
# [server] plain HTTP and once with tls_cert_file/tls_key_file (a self-signed certificate
# made with openssl), each scraped $SCRAPES times in sequence with curl, one run.
# Reports the median and mean curl time_total per target and the TLS/plain ratio, for
# fresh connections (a TLS handshake per scrape, the worst case) and for one kept-alive
# connection (what Prometheus does).
#
# Loopback only; both daemons and the temp dir are removed on exit. PostgreSQL is the DSN
# in $PGVIGIL_DSN (default: a closed port, so /metrics answers pg_up 0 without SQL: the
# ratio then measures the listener, not the collectors).
#
# Usage: bench/tls.sh [path/to/pgvigil]   (default: target/release/pgvigil, else debug)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=${1:-}
[ -n "$BIN" ] || for b in "$TARGET/release/pgvigil" "$TARGET/debug/pgvigil"; do [ -x "$b" ] && { BIN=$b; break; }; done
[ -x "${BIN:-}" ] || { echo "no pgvigil binary; cargo build --release first" >&2; exit 2; }
SCRAPES=${SCRAPES:-200}
DSN=${PGVIGIL_DSN:-postgresql://postgres@127.0.0.1:1/postgres}
PLAIN_PORT=${PLAIN_PORT:-59441}
TLS_PORT=${TLS_PORT:-59442}
DIR=$(mktemp -d /tmp/pgvigil-bench-tls.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$DIR/tls.key" -out "$DIR/tls.crt" 2>/dev/null
chmod 600 "$DIR/tls.key"
common="[postgres]\ndsn = \"$DSN\"\n[audit]\nstdout = false\n"
printf "[server]\nlisten = \"127.0.0.1:$PLAIN_PORT\"\n$common" >"$DIR/plain.toml"
printf "[server]\nlisten = \"127.0.0.1:$TLS_PORT\"\ntls_cert_file = \"$DIR/tls.crt\"\ntls_key_file = \"$DIR/tls.key\"\n$common" >"$DIR/tls.toml"
for t in plain tls; do
  "$BIN" --log-format json run -c "$DIR/$t.toml" >"$DIR/$t.log" 2>&1 &
  PIDS+=($!)
done
for url in "http://127.0.0.1:$PLAIN_PORT/healthz" "https://127.0.0.1:$TLS_PORT/healthz"; do
  for _ in $(seq 100); do curl -fsS --cacert "$DIR/tls.crt" -o /dev/null "$url" 2>/dev/null && break; sleep 0.1; done
done

stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%.3f %.3f\n", a[int((NR+1)/2)]*1000, s/NR*1000}'; }
fresh() { for _ in $(seq "$SCRAPES"); do curl -sS --cacert "$DIR/tls.crt" -o /dev/null -w '%{time_total}\n' "$1"; done; }
# One curl process, $SCRAPES URLs: curl reuses the connection.
kept() {
  local args=()
  for _ in $(seq "$SCRAPES"); do args+=("$1" -o /dev/null -w '%{time_total}\n'); done
  curl -sS --cacert "$DIR/tls.crt" "${args[@]}"
}
printf '%-10s %-8s %12s %12s\n' mode target median_ms mean_ms
for mode in fresh kept; do
  read -r pm pa < <($mode "http://127.0.0.1:$PLAIN_PORT/metrics" | stats)
  read -r tm ta < <($mode "https://127.0.0.1:$TLS_PORT/metrics" | stats)
  printf '%-10s %-8s %12s %12s\n' "$mode" plain "$pm" "$pa" "$mode" tls "$tm" "$ta"
  awk -v m="$mode" -v p="$pm" -v t="$tm" -v pa="$pa" -v ta="$ta" \
    'BEGIN {printf "%-10s ratio    median %.2f  mean %.2f  (tls/plain)\n", m, t/p, ta/pa}'
done
echo "binary: $BIN; scrapes per target: $SCRAPES; dsn: $DSN"
