#!/usr/bin/env python3
"""Compares two Prometheus text scrapes of one server: postgres_exporter's (or
pgbouncer_exporter's) and pgvigil's. Prints the families both export (same labels or
not), the families only one exports, and, for series with the same name and labels, how
many values agree. Values are compared exactly for settings and other slow-moving gauges
and with a 5 % tolerance otherwise (the two scrapes are seconds apart).

Usage: bench/compat.py EXPORTER.metrics PGVIGIL.metrics [--ignore-label server] [--prefix pgbouncer_]
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SUFFIXES = ("_bucket", "_sum", "_count")
# Families a tool exports about itself, not about the server.
OWN = ("go_", "process_", "promhttp_", "pgvigil_", "postgres_exporter_", "pgbouncer_exporter_")


def parse(path, ignore):
    types = {}
    series = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            types[name] = kind
            continue
        if line.startswith("#") or not line.strip():
            continue
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        pairs = tuple(sorted((k, v) for k, v in LABEL.findall(labels) if k not in ignore))
        try:
            series[(name, pairs)] = float(value)
        except ValueError:
            pass
    return types, series


def family(name, types):
    if name in types:
        return name
    for s in SUFFIXES:
        if name.endswith(s) and name[: -len(s)] in types:
            return name[: -len(s)]
    return name


def main():
    argv = sys.argv[1:]
    ignore, prefix = set(), ""
    if "--ignore-label" in argv:
        i = argv.index("--ignore-label")
        ignore.add(argv[i + 1])
        del argv[i : i + 2]
    if "--prefix" in argv:
        i = argv.index("--prefix")
        prefix = argv[i + 1]
        del argv[i : i + 2]
    args = argv
    exp_types, exp = parse(args[0], ignore)
    pv_types, pv = parse(args[1], ignore)
    labels = lambda ser, types: {  # noqa: E731
        f: set() for f in {family(n, types) for n, _ in ser}
    }
    exp_l, pv_l = labels(exp, exp_types), labels(pv, pv_types)
    for (n, ls), _ in exp.items():
        exp_l[family(n, exp_types)].update(k for k, _ in ls if k != "le")
    for (n, ls), _ in pv.items():
        pv_l[family(n, pv_types)].update(k for k, _ in ls if k != "le")
    server = lambda f: not f.startswith(OWN) and f.startswith(prefix)  # noqa: E731
    both = sorted(f for f in exp_l if f in pv_l and server(f))
    only_exp = sorted(f for f in exp_l if f not in pv_l and server(f))
    only_pv = sorted(f for f in pv_l if f not in exp_l and server(f))
    same_labels = [f for f in both if exp_l[f] == pv_l[f]]
    diff_labels = [f for f in both if exp_l[f] != pv_l[f]]

    agree, differ, differing = 0, 0, defaultdict(int)
    for key, v in exp.items():
        if key not in pv or not server(key[0]):
            continue
        w = pv[key]
        exact = key[0].startswith("pg_settings_")
        ok = v == w if exact else abs(v - w) <= 0.05 * max(abs(v), abs(w), 1.0)
        if ok:
            agree += 1
        else:
            differ += 1
            differing[family(key[0], exp_types)] += 1

    print(f"server families: exporter {len(exp_l) - sum(not server(f) for f in exp_l)}, "
          f"pgvigil {len(pv_l) - sum(not server(f) for f in pv_l)}")
    print(f"in both: {len(both)} ({len(same_labels)} with the same label names, "
          f"{len(diff_labels)} with different ones)")
    for f in diff_labels:
        print(f"  labels differ: {f}: exporter {sorted(exp_l[f])}, pgvigil {sorted(pv_l[f])}")
    print(f"only the exporter: {len(only_exp)}")
    for f in only_exp:
        print(f"  {f}")
    print(f"only pgvigil: {len(only_pv)}")
    print("  " + ", ".join(only_pv) if only_pv else "")
    print(f"series with the same name and labels: {agree + differ}; values agree: {agree}, "
          f"differ: {differ}")
    for f, n in sorted(differing.items(), key=lambda x: -x[1])[:20]:
        print(f"  differs: {f} ({n} series)")


if __name__ == "__main__":
    main()
