#!/usr/bin/env bash
# Custody benchmark: what retention, the residency guard and the off-site copy cost, on a
# synthetic repository that looks like 40 days of a real one, on a local directory and on
# S3 (moto_server on loopback).
#
#   1. residency  WALPUSH_N fresh WAL segments pushed with `pgvigil wal-push` into moto,
#                 once with storage.residency = "eu" (the guard asks the bucket where it is
#                 before the first write: HeadBucket, GetBucketLocation,
#                 GetBucketReplication) and once with "any" (no check): the per-push
#                 overhead of the check, and the ratio.
#   2. retention  a repository of DAYS daily backups (BASE_KB each) and WAL_PER_DAY WAL
#                 objects per day; `pgvigil retention --dry-run` and `pgvigil retention`
#                 (recovery window 35 days: the backups older than the newest one before
#                 the window go, with their WAL), on file:// and on S3. Objects deleted per
#                 second.
#   3. offsite    the newest backup (OFFSITE_MB of incompressible data) and its WAL copied
#                 by `pgvigil offsite`: S3 -> S3 on one endpoint (server-side CopyObject +
#                 read-back verification) and file:// -> S3 (streamed + verification); MB/s.
#
# Synthetic WAL segments carry a valid long page header (the system identifier is what
# wal-push checks), so no PostgreSQL is needed. Only 127.0.0.1 is used; every step has a
# timeout and the script re-execs itself under `timeout` (BENCH_TIMEOUT). moto is stopped
# on exit. There is no side-by-side reference tool here: pgBackRest has no residency check
# and its `expire` needs a month of real backups; backup.sh compares wal-push with
# pgBackRest's archive-push.
#
# Usage (as root):  bench/custody.sh [--smoke]   (--smoke: small sizes)
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

if [ -z "${CUSTODY_UNDER_TIMEOUT:-}" ]; then
  export CUSTODY_UNDER_TIMEOUT=1
  exec timeout "${BENCH_TIMEOUT:-1800}" "$0" "$@"
fi

DAYS=${DAYS:-40}
WAL_PER_DAY=${WAL_PER_DAY:-96}
BASE_KB=${BASE_KB:-256}
WALPUSH_N=${WALPUSH_N:-30}
OFFSITE_MB=${OFFSITE_MB:-256}
MOTO_PORT=${MOTO_PORT:-59006}
if [ "${1:-}" = "--smoke" ]; then
  DAYS=40; WAL_PER_DAY=4; BASE_KB=16; WALPUSH_N=3; OFFSITE_MB=8
fi

WORK=$BENCH_DIR/custody
RESULTS=$BENCH_DIR/results-custody/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$WORK" "$RESULTS" "$LOGDIR"
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn

command -v moto_server >/dev/null || die "moto_server missing: make deps"
ensure_packages zstd curl
build_pgvigil "$LOGDIR/custody-build.log" || die "${PGVIGIL_NOTE:-no pgvigil binary}"
log "pgvigil: $PGVIGIL_BIN; results in $RESULTS"

MOTO_PID=
cleanup() { stop_pid "$MOTO_PID"; }
trap cleanup EXIT
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGDIR/custody-moto.log" 2>&1 &
MOTO_PID=$!
wait_port "$MOTO_PORT" "$MOTO_PID" 30 || die "moto_server did not start"

# py SCRIPT ARGS... : python with boto3 (installed with moto) against the bench moto.
py() { timeout 900 python3 - "$@"; }

# config FILE URL RESIDENCY [OFFSITE_URL]
config() {
  {
    printf '[server]\nlisten = "127.0.0.1:1"\n[postgres]\ndsn = "postgresql://bench@127.0.0.1:1/postgres"\n'
    printf '[storage]\nurl = "%s"\nresidency = "%s"\n' "$2" "$3"
    printf '[storage.s3]\nregion = "eu-central-1"\nendpoint = "%s"\nforce_path_style = true\n' "$ENDPOINT"
    [ -n "${4:-}" ] && printf '[offsite]\nurl = "%s"\n' "$4"
    printf '[retention]\nrecovery_window = "35days"\n'
  } >"$1"
}

# ms_of CMD... : wall milliseconds of one command (fails the script if it fails)
ms_of() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

# ------------------------------------------------------------- synthetic data

# py_make_repo DIR DAYS WAL_PER_DAY BASE_KB BIG_MB BIG : writes the synthetic repository
# into DIR (file:// layout, cluster "default"): DAYS daily backups ending 02:00 each day
# before today, WAL_PER_DAY zstd-compressed WAL files per day with their raw SHA-256 in
# metadata sidecars, and the newest backup's base BIG_MB large when BIG=1.
py_make_repo() {
  rm -rf "$1"
  py "$@" <<'PY'
import datetime, hashlib, json, os, sys
root, days, per_day, base_kb, big_mb, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
sysid = 7300000000000000001
now = datetime.datetime.now(datetime.timezone.utc)
c = os.path.join(root, "default")
os.makedirs(os.path.join(c, "wal"), exist_ok=True)
os.makedirs(os.path.join(c, "state"), exist_ok=True)
json.dump({"system_identifier": str(sysid)}, open(os.path.join(c, "state", "cluster.json"), "w"))
seg = 1
def walname(n): return "00000001%08X%08X" % (n >> 8, n & 0xFF)
for d in range(days, 0, -1):
    stop = now - datetime.timedelta(days=d) + datetime.timedelta(hours=2)
    start_wal = walname(seg)
    for _ in range(per_day):
        name = walname(seg); seg += 1
        raw = name.encode() * 16
        open(os.path.join(c, "wal", name), "wb").write(raw)  # zstd'd below
        json.dump({"sha256": hashlib.sha256(raw).hexdigest(), "raw-size": str(len(raw))},
                  open(os.path.join(c, "wal", "." + name + ".zst.meta.json"), "w"))
    bid = stop.strftime("%Y%m%dT%H%M%SZ")
    bdir = os.path.join(c, "backups", bid)
    os.makedirs(bdir, exist_ok=True)
    size = big_mb * 1024 * 1024 if (big and d == 1) else base_kb * 1024
    h = hashlib.sha256()
    with open(os.path.join(bdir, "base.tar.zst"), "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20)); h.update(chunk); f.write(chunk); left -= len(chunk)
    info = {"format": 1, "id": bid, "pgvigil_version": "bench", "system_identifier": str(sysid),
            "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/1", "stop_lsn": "0/2",
            "start_wal": start_wal, "start_time": stop.isoformat().replace("+00:00", "Z"),
            "stop_time": stop.isoformat().replace("+00:00", "Z"), "duration_seconds": 1.0,
            "raw_bytes": size, "stored_bytes": size, "compression": "zstd",
            "objects": [{"name": "base.tar.zst", "stored_bytes": size, "sha256": h.hexdigest()}]}
    json.dump(info, open(os.path.join(bdir, "backup.json"), "w"))
PY
  (cd "$1/default/wal" && find . -maxdepth 1 -type f ! -name '.*' ! -name '*.zst' -print0 \
    | xargs -0 -r timeout 300 zstd -q -1 --rm)
}

# upload DIR BUCKET PREFIX : copies a file:// repository into a bucket (with metadata)
upload() {
  py "$@" "$ENDPOINT" <<'PY'
import json, os, sys, boto3
from concurrent.futures import ThreadPoolExecutor
root, bucket, prefix, endpoint = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-central-1")
jobs = []
for d, _, files in os.walk(root):
    for f in files:
        if f.startswith("."):
            continue
        p = os.path.join(d, f)
        meta_p = os.path.join(d, "." + f + ".meta.json")
        meta = json.load(open(meta_p)) if os.path.exists(meta_p) else {}
        jobs.append((p, prefix + "/" + os.path.relpath(p, root), meta))
def put(j):
    p, key, meta = j
    with open(p, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f, Metadata=meta)
with ThreadPoolExecutor(8) as ex:
    list(ex.map(put, jobs))
PY
}

# bucket NAME [REGION] : (re)creates an empty bucket
bucket() {
  py "$1" "${2:-eu-central-1}" "$ENDPOINT" <<'PY'
import sys, boto3
name, region, endpoint = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
try:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=o["Key"])
    s3.delete_bucket(Bucket=name)
except s3.exceptions.NoSuchBucket:
    pass
except Exception:
    pass
kw = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
s3.create_bucket(Bucket=name, **kw)
PY
}

# ------------------------------------------------------------- 1. residency

log "1. residency: $WALPUSH_N wal-push per policy into moto"
segdir=$WORK/segments
rm -rf "$segdir"; mkdir -p "$segdir"
py "$segdir" "$WALPUSH_N" <<'PY'
import os, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
for policy in ("eu", "any"):
    os.makedirs(os.path.join(d, policy), exist_ok=True)
    for i in range(n):
        # A 16 MiB segment: long page header (magic, XLP_LONG_HEADER, sysid at offset 24).
        head = struct.pack("<HHIQI", 0xD110, 0x0002, 1, 0, 0).ljust(24, b"\0") + struct.pack("<Q", 7300000000000000001)
        body = head + os.urandom(1 << 20) + b"\0" * ((16 << 20) - (1 << 20) - len(head))
        open(os.path.join(d, policy, "00000001%08X%08X" % (0xA0, i + 1)), "wb").write(body)
PY
for policy in eu any; do
  bucket "push-$policy"
  config "$WORK/push-$policy.toml" "s3://push-$policy/p" "$policy"
  : >"$RESULTS/walpush-$policy.ms"
  for f in "$segdir/$policy"/*; do
    ms_of timeout 60 "$PGVIGIL_BIN" wal-push -c "$WORK/push-$policy.toml" "$f" >>"$RESULTS/walpush-$policy.ms"
  done
done
read -r _ _ eu_med _ < <(stats <"$RESULTS/walpush-eu.ms")
read -r _ _ any_med _ < <(stats <"$RESULTS/walpush-any.ms")

# ------------------------------------------------------------- 2. retention

log "2. retention: $DAYS daily backups, $WAL_PER_DAY WAL per day"
py_make_repo "$WORK/repo-file" "$DAYS" "$WAL_PER_DAY" "$BASE_KB" "$OFFSITE_MB" 0
objects=$(find "$WORK/repo-file/default" -type f ! -name '.*' | wc -l)
rm -rf "$WORK/repo-file.orig"
cp -a "$WORK/repo-file" "$WORK/repo-file.orig"
config "$WORK/ret-file.toml" "file://$WORK/repo-file" eu
dry_file=$(ms_of timeout 300 "$PGVIGIL_BIN" retention --dry-run -c "$WORK/ret-file.toml")
t0=$(date +%s%N)
timeout 300 "$PGVIGIL_BIN" retention --json -c "$WORK/ret-file.toml" >"$RESULTS/retention-file.json"
t1=$(date +%s%N); real_file=$(((t1 - t0) / 1000000))
deleted=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["deleted_objects"])' "$RESULTS/retention-file.json")

bucket ret
upload "$WORK/repo-file.orig" ret p
config "$WORK/ret-s3.toml" "s3://ret/p" eu
dry_s3=$(ms_of timeout 600 "$PGVIGIL_BIN" retention --dry-run -c "$WORK/ret-s3.toml")
real_s3=$(ms_of timeout 600 "$PGVIGIL_BIN" retention -c "$WORK/ret-s3.toml")

# ------------------------------------------------------------- 3. offsite

log "3. offsite: newest backup of $OFFSITE_MB MB + its WAL"
py_make_repo "$WORK/repo-big" "$DAYS" "$WAL_PER_DAY" "$BASE_KB" "$OFFSITE_MB" 1
bucket src; bucket copies
upload "$WORK/repo-big" src p
config "$WORK/off-s3.toml" "s3://src/p" eu "s3://copies/server-side"
"$PGVIGIL_BIN" offsite --json -c "$WORK/off-s3.toml" >/dev/null  # warm (moto, caches)
bucket copies
t0=$(date +%s%N)
timeout 600 "$PGVIGIL_BIN" offsite --json -c "$WORK/off-s3.toml" >"$RESULTS/offsite-server-side.json"
t1=$(date +%s%N); off_server=$(((t1 - t0) / 1000000))
bucket copies
config "$WORK/off-file.toml" "file://$WORK/repo-big" eu "s3://copies/streamed"
t0=$(date +%s%N)
timeout 600 "$PGVIGIL_BIN" offsite --json -c "$WORK/off-file.toml" >"$RESULTS/offsite-streamed.json"
t1=$(date +%s%N); off_stream=$(((t1 - t0) / 1000000))
t0=$(date +%s%N)
timeout 600 "$PGVIGIL_BIN" offsite --json -c "$WORK/off-file.toml" >"$RESULTS/offsite-again.json"
t1=$(date +%s%N); off_again=$(((t1 - t0) / 1000000))

# ------------------------------------------------------------- report

{
  echo "custody benchmark $(date -u +%FT%TZ), pgvigil $("$PGVIGIL_BIN" --version)"
  echo
  echo "1. residency guard, wal-push of a 16 MiB segment into S3 (moto), median of $WALPUSH_N:"
  echo "   residency \"eu\" (checked before the first write): ${eu_med} ms"
  echo "   residency \"any\" (no check):                      ${any_med} ms"
  echo "   overhead: $(awk -v a="$eu_med" -v b="$any_med" 'BEGIN { printf "%.1f", a - b }') ms per push; ratio eu/any $(div "$eu_med" "$any_med")"
  echo
  echo "2. retention, $DAYS daily backups, $objects objects, window 35 days ($deleted deleted):"
  echo "   file://  dry run ${dry_file} ms, run ${real_file} ms ($(div "$deleted" "$(div "$real_file" 1000 %.3f)" %.0f) objects/s)"
  echo "   S3       dry run ${dry_s3} ms, run ${real_s3} ms ($(div "$deleted" "$(div "$real_s3" 1000 %.3f)" %.0f) objects/s)"
  echo
  echo "3. off-site copy of a $OFFSITE_MB MB backup and its WAL, read back and verified:"
  echo "   S3 -> S3 (server-side CopyObject): ${off_server} ms ($(div "$((OFFSITE_MB * 1000))" "$off_server" %.0f) MB/s)"
  echo "   file:// -> S3 (streamed):          ${off_stream} ms ($(div "$((OFFSITE_MB * 1000))" "$off_stream" %.0f) MB/s)"
  echo "   again, nothing new (skipped):      ${off_again} ms"
} | tee "$RESULTS/summary.txt"
