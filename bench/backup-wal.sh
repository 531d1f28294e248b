# shellcheck shell=bash
# Phases `archive` and `replay` of bench/backup.sh (sourced by it, after lib.sh and its own
# settings and helpers; not runnable alone). See bench/README.md.

# ---------------------------------------------------------------- WAL helpers

SEG_BYTES=16777216

# segno NAME : segment number of a WAL file name (16 MiB segments; the timeline left out)
segno() { local n=$1; echo $((16#${n:8:8} * 256 + 16#${n:16:8})); }

# "walfile lsn_bytes" of the current insert position
wal_now() { psql_v -d postgres -c "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn() - '0/0'::pg_lsn"; }

# age in s (1 decimal) of the oldest segment waiting for the archiver (its .ready file
# appears when the segment is complete), or 0
oldest_ready_age() {
  local oldest
  oldest=$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' -printf '%T@\n' 2>/dev/null | sort -n | head -n1)
  [ -n "$oldest" ] || { echo 0; return; }
  awk -v o="$oldest" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", n - o }'
}

# count the lines of the server log from OFFSET on that match PATTERN (grep -E)
log_count() { log_since "$1" | grep -cE "$2" || true; }

# ---------------------------------------------------------------- phase archive

BURST_TX=""   # transactions per client, calibrated once per run

# arch_sampler OUT STOPFILE [METRICS_URL] : once a second until STOPFILE exists (at most
# 3 h; the run's watchdog is shorter), one line:
#   t_ms ready oldest_ready_age_s archived_count last_archived_wal current_wal
#   pg_stat_archiver_age_s pgvigil_wal_archive_age_seconds
arch_sampler() {
  local out=$1 stopf=$2 url=${3:-} i t a pg pgv
  for ((i = 0; i < 10800; i++)); do
    [ -e "$stopf" ] && break
    t=$(ms_now)
    a=$(psql_v -d postgres -c "SELECT archived_count, coalesce(last_archived_wal, '-'), pg_walfile_name(pg_current_wal_lsn()),
      coalesce(round(extract(epoch FROM now() - last_archived_time)::numeric, 1)::text, '-') FROM pg_stat_archiver" 2>/dev/null) || a="- - - -"
    pgv=-
    if [ -n "$url" ]; then
      pgv=$(curl -s -m 2 "$url" 2>/dev/null | awk '$1 == "pgvigil_wal_archive_age_seconds" {v = $2} END {print (v == "") ? "-" : v}')
    fi
    pg=$(ready_count)
    echo "$t $pg $(oldest_ready_age) $a $pgv" >>"$out"
    sleep "$(awk -v s="$t" -v n="$(ms_now)" 'BEGIN { d = 1 - (n - s) / 1000; printf "%.3f\n", (d > 0.05) ? d : 0.05 }')"
  done
}

burst_sql() {
  # 192 characters of text per row from one md5: about 2.5x the WAL per CPU second of
  # md5-only rows, so the writer outpaces the archiver sooner on 2 cores
  echo "INSERT INTO pgvigil_bench_burst SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, $BURST_ROWS) g;" \
    >"$BK/conf/burst.sql"
  chmod 0644 "$BK/conf/burst.sql"
}

# burst TX : the write burst, pgbench with BURST_CLIENTS clients of TX transactions each
burst() {
  timeout 3600 runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n \
    -c "$BURST_CLIENTS" -j "$BURST_CLIENTS" -t "$1" -f "$BK/conf/burst.sql" postgres
}

# Calibrates BURST_TX (fixed work for every variant): WAL bytes of 4 transactions per client.
calibrate_burst() {
  [ -z "$BURST_TX" ] || return 0
  local w0 l0 w1 l1 per
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_burst" \
    -c "CREATE TABLE pgvigil_bench_burst (id int, payload text)" >/dev/null
  read -r w0 l0 < <(wal_now)
  burst 4 >"$RL/archive-calibration.log" 2>&1 || die "pgbench calibration failed, see $RL/archive-calibration.log"
  read -r w1 l1 < <(wal_now)
  per=$(((l1 - l0) / (4 * BURST_CLIENTS)))
  ((per > 0)) || die "calibration: no WAL written"
  BURST_TX=$(((BURST_SEGMENTS * SEG_BYTES + per * BURST_CLIENTS - 1) / (per * BURST_CLIENTS) + 1))
  log "burst: ~$((per / 1024)) KiB of WAL per transaction: $BURST_CLIENTS clients x $BURST_TX transactions for ~$BURST_SEGMENTS segments"
  echo "burst_wal_bytes_per_tx $per" >>"$RES/archive-settings.txt"
  echo "burst_tx_per_client $BURST_TX" >>"$RES/archive-settings.txt"
}

# the archive_command of an archive variant, and the pgBackRest version it uses (or "")
arch_command() {
  case $1 in
    pgvigil_ahead | pgvigil_plain) echo "$PGVIGIL wal-push -c $ARCH_CONF %p" ;;
    pgbr_*_async) local v=${1#pgbr_}; v=${v%_async}; echo "${PGBR_BIN[$v]} --config=$(pgbr_async_conf "$v") --stanza=bench archive-push %p" ;;
    *) return 1 ;;
  esac
}

ARCH_DAEMON_PID=""
# arch_variant VARIANT RUN : one burst archived by VARIANT; appends to archive.runs
arch_variant() {
  local var=$1 run=$2 cmd url="" pv="" tag=$1-$2
  cmd=$(arch_command "$var") || die "ARCH_VARIANTS: unknown $var"
  case $var in pgbr_*) pv=${var#pgbr_}; pv=${pv%_async} ;; esac
  log "archive: $var, run $run"
  # the previous variant's backlog (or the calibration's) is drained by the command
  # that pushed it; then this variant's command, and what it needs
  wait_archived "$ARCH_DRAIN_TIMEOUT" || log "archiver backlog did not drain within $ARCH_DRAIN_TIMEOUT s"
  set_archive_command "$cmd"
  [ -z "$pv" ] || pgbr_stanza "$pv"
  if [ "$var" = pgvigil_ahead ]; then
    (cd "$BK/home" && exec timeout -k 10 3600 setpriv --reuid=postgres --regid=postgres --init-groups \
      env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$BK/home" RUST_LOG=info,pgvigil::backup::wal_ahead=debug "$PGVIGIL" run -c "$ARCH_CONF") \
      >"$RL/archive-daemon-$tag.log" 2>&1 &
    ARCH_DAEMON_PID=$!
    BG_PIDS+=("$ARCH_DAEMON_PID")
    wait_http_200 "http://127.0.0.1:$ARCH_PORT/readyz" "$ARCH_DAEMON_PID" 60 ||
      { echo "archive: the daemon did not get ready; log: $(tail -n 3 "$RL/archive-daemon-$tag.log" | tr '\n' ' ')" >>"$RES/errors.txt"; stop_pid "$ARCH_DAEMON_PID"; ARCH_DAEMON_PID=""; return 1; }
    url="http://127.0.0.1:$ARCH_PORT/metrics"
  fi
  wal_push_check "$var" || true
  wait_archived "$ARCH_DRAIN_TIMEOUT" || log "archiver backlog did not drain within $ARCH_DRAIN_TIMEOUT s"
  if [ -n "$url" ]; then
    # the gauge is set by the daemon's PITR check (every ARCH_PITR_CHECK): wait until it
    # saw the segment just archived, so the first samples are not the age before the run
    local k age
    for ((k = 0; k < 60; k++)); do
      age=$(curl -s -m 2 "$url" 2>/dev/null | awk '$1 == "pgvigil_wal_archive_age_seconds" {v = $2} END {print (v == "") ? 1e9 : v}')
      awk -v a="$age" 'BEGIN { exit !(a < 30) }' && break
      sleep 1
    done
  fi
  psql_b -d postgres -c "TRUNCATE pgvigil_bench_burst" -c "CHECKPOINT" >/dev/null
  sleep 1

  local c0 f0 c1 f1 c2 f2 w0 l0 w1 l1 last1 ready1 old1 off t0 burst_ms drain_ms drained=yes a b spid
  local stopf=$RL/archive-$tag.stop samples=$RES/archive-$tag.samples ticks0=""
  rm -f "$stopf"; : >"$samples"
  # the daemon is the child of its `timeout` (setpriv and env exec it)
  local dpid=""
  [ -z "$ARCH_DAEMON_PID" ] || dpid=$(cat /proc/"$ARCH_DAEMON_PID"/task/*/children 2>/dev/null | awk '{print $1; exit}')
  [ -z "$dpid" ] || ticks0=$(cpu_ticks "$dpid" 2>/dev/null || true)
  read -r c0 f0 _ < <(archiver_stats)
  read -r w0 l0 < <(wal_now)
  off=$(log_size)
  arch_sampler "$samples" "$stopf" "$url" &
  spid=$!
  BG_PIDS+=("$spid")
  a=$(host_cpu)
  t0=$(ms_now)
  local tb0=$t0
  burst "$BURST_TX" >"$RL/archive-pgbench-$tag.log" 2>&1 || {
    echo "archive $tag: pgbench failed: $(tail -n 2 "$RL/archive-pgbench-$tag.log" | tr '\n' ' ')" >>"$RES/errors.txt"; }
  burst_ms=$(ms_since "$t0")
  read -r c1 f1 last1 _ < <(archiver_stats)
  read -r w1 l1 < <(wal_now)
  ready1=$(ready_count); old1=$(oldest_ready_age)
  t0=$(ms_now)
  wait_archived "$ARCH_DRAIN_TIMEOUT" || drained=no
  drain_ms=$(ms_since "$t0")
  b=$(host_cpu)
  read -r c2 f2 _ < <(archiver_stats)
  touch "$stopf"; wait "$spid" 2>/dev/null || true
  local daemon_cpu=-
  if [ -n "$ARCH_DAEMON_PID" ]; then
    [ -n "$ticks0" ] && daemon_cpu=$(awk -v a="$ticks0" -v b="$(cpu_ticks "$dpid" 2>/dev/null || echo "$ticks0")" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')
    stop_pid "$ARCH_DAEMON_PID"; ARCH_DAEMON_PID=""
  fi
  local produced lag_segs lag_bytes dup pushed busy maxold maxpg maxpgv
  produced=$(($(segno "$w1") - $(segno "$w0")))
  if [ "$last1" != - ]; then
    lag_segs=$(($(segno "$w1") - $(segno "$last1") - 1))
    lag_bytes=$((l1 - ($(segno "$last1") + 1) * SEG_BYTES))
  else
    lag_segs=- lag_bytes=-
  fi
  dup=$(log_count "$off" '"event":"wal.push.duplicate"')
  pushed=$(log_count "$off" '"event":"wal.push.completed"')
  busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
  maxold=$(awk '$3 != "-" {if ($3 + 0 > m) m = $3 + 0} END {printf "%.1f\n", m}' "$samples")
  # the archiver's age counts from the burst's first archived segment on (before it, it
  # measures the idle time before the burst)
  maxpg=$(awk -v c="$c0" '$4 != "-" && $4 > c && $7 != "-" {if ($7 + 0 > m) m = $7 + 0} END {printf "%.1f\n", m}' "$samples")
  # the gauge is what the daemon's last PITR check found: only samples from one check
  # interval after the burst's start on show a check made during the burst
  local pitr_ms
  pitr_ms=$(awk -v v="$ARCH_PITR_CHECK" 'BEGIN { n = v + 0; if (v ~ /ms$/) n /= 1000; else if (v ~ /m$/) n *= 60; print int(n * 1000) }')
  maxpgv=$(awk -v t0="$tb0" -v w="$pitr_ms" '$1 >= t0 + w && $8 != "-" {n++; if ($8 + 0 > m) m = $8 + 0} END {if (n) printf "%.1f\n", m; else print "-"}' "$samples")
  # what the daemon itself pushed / found stored (its debug line per round)
  local dpushed=- dpresent=-
  if [ -f "$RL/archive-daemon-$tag.log" ] && [ "$var" = pgvigil_ahead ]; then
    read -r dpushed dpresent < <(grep '"wal.ahead.round"' "$RL/archive-daemon-$tag.log" |
      sed -nE 's/.*"pushed":([0-9]+).*"present":([0-9]+).*/\1 \2/p' | awk '{a += $1; b += $2} END {print a + 0, b + 0}')
  fi
  # variant run burst_s produced archived_in_burst segs_per_s_burst ready_at_end lag_segs_end
  # lag_mb_end oldest_ready_at_end_s drain_s drained segs_per_s_total max_oldest_ready_s
  # max_pg_archiver_age_s max_pgvigil_archive_age_s failed wal_push_pushed wal_push_found_stored
  # daemon_cpu_s host_busy_pct daemon_pushed daemon_found_stored
  echo "$var $run $(ms2s "$burst_ms") $produced $((c1 - c0)) $(div "$((c1 - c0))" "$(ms2s "$burst_ms")" %.2f) $ready1 $lag_segs \
$( [ "$lag_bytes" = - ] && echo - || awk -v b="$lag_bytes" 'BEGIN { printf "%.0f", b / 1048576 }') $old1 $(ms2s "$drain_ms") $drained \
$(div "$((c2 - c0))" "$(ms2s "$((burst_ms + drain_ms))")" %.2f) $maxold $maxpg $maxpgv $((f2 - f0)) $pushed $dup $daemon_cpu $busy $dpushed $dpresent" |
    tee -a "$RES/archive.runs" >&2
  ((f2 <= f0)) || echo "archive $tag: $((f2 - f0)) failed archive_command runs; server log: $(log_since "$off" | grep -E 'archive command failed|pgvigil: |ERROR' | head -n 2 | tr '\n' ' ')" >>"$RES/errors.txt"
  [ "$drained" = yes ] || echo "archive $tag: backlog not drained within $ARCH_DRAIN_TIMEOUT s" >>"$RES/errors.txt"
  ((produced >= BURST_SEGMENTS * 8 / 10)) || echo "archive $tag: the burst wrote only $produced segments (BURST_SEGMENTS=$BURST_SEGMENTS)" >>"$RES/errors.txt"
}

phase_archive() {
  local vars=() v v2 i j n
  for v in $ARCH_VARIANTS; do
    case $v in pgbr_*_async) v2=${v#pgbr_}; has_pgbr "${v2%_async}" || { log "archive: $v skipped (not in PGBR_VERSIONS)"; continue; } ;; esac
    vars+=("$v")
  done
  n=${#vars[@]}
  ((n > 0)) || { log "== phase archive: no variant"; return 0; }
  log "== phase archive: a pgbench write burst of ~$BURST_SEGMENTS segments archived by ${vars[*]}, $ARCH_RUNS run(s) each"
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
  {
    echo "burst_segments $BURST_SEGMENTS"
    echo "burst_clients $BURST_CLIENTS"
    echo "burst_rows_per_tx $BURST_ROWS"
    echo "archive_workers $ARCH_WORKERS"
    echo "pgbr_async_process_max $PGBR_ASYNC_PROCESS_MAX"
    echo "pitr_check_interval $ARCH_PITR_CHECK"
  } >"$RES/archive-settings.txt"
  burst_sql
  set_archive_command "$(arch_command "${vars[0]}")"
  calibrate_burst
  for ((i = 1; i <= ARCH_RUNS; i++)); do
    for ((j = 0; j < n; j++)); do
      v=${vars[$(((j + i - 1) % n))]}
      wait_quiet "archive $v run $i" "$QUIET_ROUND_WAIT"
      arch_variant "$v" "$i" || true
    done
  done
  wait_archived "$ARCH_DRAIN_TIMEOUT" || true
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_burst" >/dev/null
}

# ---------------------------------------------------------------- phase replay

MOTO_PID=""
start_moto() {
  command -v moto_server >/dev/null 2>&1 || { log "moto_server not found (pip install 'moto[server]')"; return 1; }
  port_open "$MOTO_PORT" && { log "port $MOTO_PORT is taken"; return 1; }
  (exec timeout -k 10 10800 moto_server -H 127.0.0.1 -p "$MOTO_PORT") >"$LOGDIR/backup-moto.log" 2>&1 &
  MOTO_PID=$!
  BG_PIDS+=("$MOTO_PID")
  wait_port "$MOTO_PORT" "$MOTO_PID" 30 || return 1
  local code
  code=$(curl -s -m 10 -o "$RL/moto-create-bucket.out" -w '%{http_code}' -X PUT "http://127.0.0.1:$MOTO_PORT/$S3_BUCKET" \
    -H 'Content-Type: application/xml' \
    --data '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-central-1</LocationConstraint></CreateBucketConfiguration>') || code=none
  [ "$code" = 200 ] || { log "moto: creating bucket $S3_BUCKET answered $code"; return 1; }
}

# replay_generate SEGMENTS : at least SEGMENTS segments of WAL (40k-row inserts of the burst's
# rows into a scratch table in database postgres, truncated before each, so the data directory
# stays small while the WAL grows); prints "segments seconds"
replay_generate() {
  local want=$1 w0 l0 w1 l1 i t0 k args=()
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_replay" -c "CREATE TABLE pgvigil_bench_replay (id int, payload text)" >/dev/null
  for ((k = 0; k < 10; k++)); do
    args+=(-c "TRUNCATE pgvigil_bench_replay"
      -c "INSERT INTO pgvigil_bench_replay SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 40000) g")
  done
  read -r w0 l0 < <(wal_now)
  t0=$(ms_now)
  # ~10 MB of WAL per insert, 10 per call: bounded at 3x the calls SEGMENTS needs
  for ((i = 0; i < want * 3 / 6 + 5; i++)); do
    read -r w1 l1 < <(wal_now)
    (($(segno "$w1") - $(segno "$w0") >= want)) && break
    psql_b -d postgres "${args[@]}" >/dev/null
  done
  read -r w1 l1 < <(wal_now)
  echo "$(($(segno "$w1") - $(segno "$w0"))) $(ms2s "$(ms_since "$t0")")"
}

phase_replay() {
  local vars=() v v2 i j n s3=0 pgbrv=""
  for v in $REPLAY_VARIANTS; do
    case $v in
      pgvigil_pf8 | pgvigil_pf0) ;;
      s3_pf8 | s3_pf0) s3=1 ;;
      pgbr_*_async | pgbr_*_sync)
        v2=${v#pgbr_}; v2=${v2%_async}; v2=${v2%_sync}
        has_pgbr "$v2" || { log "replay: $v skipped (not in PGBR_VERSIONS)"; continue; }
        [[ " $pgbrv " == *" $v2 "* ]] || pgbrv="$pgbrv $v2" ;;
      *) die "REPLAY_VARIANTS: unknown $v" ;;
    esac
    vars+=("$v")
  done
  if ((s3)) && ! start_moto; then
    echo "replay: S3 variants skipped: moto_server did not start (see $LOGDIR/backup-moto.log)" >>"$RES/errors.txt"
    local keep=()
    for v in "${vars[@]}"; do [[ $v == s3_* ]] || keep+=("$v"); done
    vars=("${keep[@]}"); s3=0
  fi
  n=${#vars[@]}
  ((n > 0)) || { log "== phase replay: no variant"; return 0; }
  log "== phase replay: backup, ~$REPLAY_SEGMENTS segments of WAL, then ${vars[*]}, $REPLAY_RUNS run(s) each"
  wait_archived 120 || log "archiver backlog did not drain within 120 s"
  # archive into every repository a variant restores from (one after the other)
  local cmd="$PGVIGIL wal-push -c $BK/conf/pgvigil-replay-pf8.toml %p"
  ((s3)) && cmd="$cmd && /usr/bin/env ${S3_ENV[*]} $PGVIGIL wal-push -c $BK/conf/pgvigil-replay-s3-pf8.toml %p"
  for v in $pgbrv; do cmd="$cmd && $(pgbr_cmd "$v") archive-push %p"; done
  set_archive_command "$cmd"
  wal_push_check "replay repositories" || true
  for v in $pgbrv; do pgbr_stanza "$v"; done
  # the backups (untimed; their times are in the log)
  local t0
  t0=$(ms_now)
  timeout 900 runuser -u postgres -- "$PGVIGIL" backup -c "$BK/conf/pgvigil-replay-pf8.toml" >"$RL/replay-backup-file.out" 2>&1 ||
    echo "replay: pgvigil backup (file) failed: $(first_error "$RL/replay-backup-file.out")" >>"$RES/errors.txt"
  echo "backup_file_s $(ms2s "$(ms_since "$t0")")" >>"$RES/replay-settings.txt"
  if ((s3)); then
    t0=$(ms_now)
    timeout 900 runuser -u postgres -- env "${S3_ENV[@]}" "$PGVIGIL" backup -c "$BK/conf/pgvigil-replay-s3-pf8.toml" >"$RL/replay-backup-s3.out" 2>&1 ||
      echo "replay: pgvigil backup (S3) failed: $(first_error "$RL/replay-backup-s3.out")" >>"$RES/errors.txt"
    echo "backup_s3_s $(ms2s "$(ms_since "$t0")")" >>"$RES/replay-settings.txt"
  fi
  for v in $pgbrv; do
    t0=$(ms_now)
    pgbr "$v" --type=full backup >"$RL/replay-backup-pgbr-$v.out" 2>&1 ||
      echo "replay: pgbackrest $v backup failed: $(first_error "$RL/replay-backup-pgbr-$v.out")" >>"$RES/errors.txt"
    echo "backup_pgbr_${v}_s $(ms2s "$(ms_since "$t0")")" >>"$RES/replay-settings.txt"
  done
  # the WAL, then a marker the restored servers must have (replayed to the end)
  local gen token
  gen=$(replay_generate "$REPLAY_SEGMENTS")
  token=replay-$(date +%s)-$RANDOM
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_replay" \
    -c "DROP TABLE IF EXISTS pgvigil_bench_replay_mark" -c "CREATE TABLE pgvigil_bench_replay_mark (token text)" \
    -c "INSERT INTO pgvigil_bench_replay_mark VALUES ('$token')" -c "SELECT pg_switch_wal()" >/dev/null
  t0=$(ms_now)
  wait_archived 3600 || echo "replay: the archiver did not catch up within 3600 s" >>"$RES/errors.txt"
  {
    echo "segments_generated ${gen% *}"
    echo "generate_s ${gen#* }"
    echo "archive_catch_up_s $(ms2s "$(ms_since "$t0")")"
    echo "wal_prefetch 8 / 0, wal_prefetch_workers 4 (default)"
    echo "pgbr_archive_get_queue_max $PGBR_GET_QUEUE_MAX, archive-get process-max $PGBR_ASYNC_PROCESS_MAX"
  } >>"$RES/replay-settings.txt"
  log "replay: ${gen% *} segments generated in ${gen#* } s; all archived"
  R_CHECK_SQL="SELECT token FROM pgvigil_bench_replay_mark" R_CHECK_EXPECT=$token
  for ((i = 1; i <= REPLAY_RUNS; i++)); do
    for ((j = 0; j < n; j++)); do
      v=${vars[$(((j + i - 1) % n))]}
      wait_quiet "replay $v run $i" "$QUIET_ROUND_WAIT"
      restore_one "$v" "$i" "$RES/replay.runs" 1800 || true
      # deleted at once (each holds the base plus up to max_wal_size of restored WAL):
      # the restore command right after pays for it (ext4, see restore_one), start ->
      # promoted, the number compared here, does not create files
      free_restores
    done
  done
  R_CHECK_SQL="" R_CHECK_EXPECT=""
  psql_b -d postgres -c "DROP TABLE IF EXISTS pgvigil_bench_replay_mark" >/dev/null
  if [ -n "$MOTO_PID" ]; then stop_pid "$MOTO_PID"; MOTO_PID=""; fi
}
