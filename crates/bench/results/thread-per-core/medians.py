#!/usr/bin/env python3
"""Medians over the runs of one binary: `medians.py DIR PREFIX` reads DIR/PREFIX*/load.json
(e.g. floor-tpc1..3) and prints, per clients and mode, the median of each column the issue's
targets name, with every run's value beside it."""
import json, statistics, sys, pathlib

root, prefix = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = sorted(p for p in root.glob(prefix + "*") if (p / "load.json").exists())
loaded = [json.loads((p / "load.json").read_text()) for p in runs]
print(f"{prefix}: {len(runs)} runs ({', '.join(p.name for p in runs)})")
for key, label, fmt, unit in (
    ("rsa2048_sign_us", "RSA-2048 sign", "{:.0f}", " µs"),
    ("proxy_idle_rss_mib", "proxy_idle_rss_mib", "{:.1f}", ""),
    ("proxy_peak_rss_mib", "proxy_peak_rss_mib", "{:.1f}", ""),
):
    values = [l[key] for l in loaded]
    print(f"{label}: median {fmt.format(statistics.median(values))}{unit} ({', '.join(fmt.format(v) for v in values)})")
columns = [
    ("req_per_sec", "req/s", "{:.0f}"),
    ("p50_us", "p50 µs", "{:.0f}"),
    ("p99_us", "p99 µs", "{:.0f}"),
    ("added_p50_us", "+p50 µs", "{:.0f}"),
    ("added_p99_us", "+p99 µs", "{:.0f}"),
    ("proxy_cpu_per_request_us", "CPU/req µs", "{:.0f}"),
    ("not_rsa_cpu_per_request_us", "not-RSA µs", "{:.0f}"),
    ("nginx_cpu_per_request_us", "nginx µs", "{:.0f}"),
    ("not_rsa_over_nginx", "ratio", "{:.2f}"),
    ("proxy_cores", "cores", "{:.2f}"),
    ("upstream_connections_accepted", "upstr. conns", "{:.0f}"),
    ("proxy_rss_mib", "RSS MiB", "{:.1f}"),
    ("errors", "errors", "{:.0f}"),
]
keys = sorted({(r["clients"], r["mode"]) for l in loaded for r in l["rows"]})
for clients, mode in keys:
    rows = [r for l in loaded for r in l["rows"] if (r["clients"], r["mode"]) == (clients, mode)]
    parts = []
    for key, name, fmt in columns:
        values = [r.get(key) for r in rows if r.get(key) is not None]
        if not values:
            continue
        parts.append(f"{name} {fmt.format(statistics.median(values))} [{' '.join(fmt.format(v) for v in values)}]")
    print(f"{clients:>5} {mode:<6} " + "; ".join(parts))
