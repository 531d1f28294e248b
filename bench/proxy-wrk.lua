-- wrk script for bench/proxy.sh.
--
-- PACE_MS (environment): when > 0, each connection waits PACE_MS ms after a
-- response before sending its next request (wrk's delay() hook; wrk has no rate
-- option). wrk starts a request's clock when it writes the request, after the
-- delay, so the latencies below never include the pause.
--
-- done() prints one machine-readable line, "RESULT key=value ...", with exact
-- percentiles in microseconds (wrk's own --latency table rounds them).

local pace = tonumber(os.getenv("PACE_MS") or "0") or 0
if pace > 0 then
  function delay()
    return pace
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d rps=%.1f mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
