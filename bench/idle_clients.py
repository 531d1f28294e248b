#!/usr/bin/python3
"""Hold N idle client connections to the bench cluster, for a bounded time.

usage: idle_clients.py PORT N HOLD_SECONDS READY_FILE DB [DB ...]

Why: a production server has many idle sessions, and exporters pay per backend
(pg_stat_activity rows, per-state counts). Each connection goes to
127.0.0.1:PORT as user postgres (round-robin over the DBs), runs one
`SELECT 1` so it is a real, authenticated session, then sits idle (not active:
no pg_sleep). READY_FILE gets the number of open connections once all are up.
The helper exits by itself after HOLD_SECONDS, so it can never outlive a
crashed bench by long; scrape.sh also stops it on exit.
"""
import signal
import sys
import time

import psycopg2  # Debian's python3-psycopg2, for /usr/bin/python3


def main() -> None:
    port, n, hold, ready = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    dbs = sys.argv[5:] or ["postgres"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conns = []
    for i in range(n):
        c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                             dbname=dbs[i % len(dbs)], application_name="bench-idle-client",
                             connect_timeout=10)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        conns.append(c)
    with open(ready, "w") as f:
        f.write(f"{len(conns)}\n")
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
