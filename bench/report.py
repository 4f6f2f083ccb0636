#!/usr/bin/env python3
"""Turns bench/run's raw results (one JSON line per run) into
results/latest.md (the table) and results/chart.svg (throughput and p99
against connection count, one line per server). Standard library only.

Ratios are paired: in each round a server's figure is divided by the C
reference's figure of the same cell and round (they ran back to back), and
the table shows the median of those ratios, which cancels most of the drift
of a shared machine."""

import argparse
import json
import os
import platform
import statistics
from collections import OrderedDict, defaultdict

REFERENCE = "ref-epoll-c"
COLORS = {"upcased": "#d62728", "ref-epoll-c": "#1f77b4", "ref-tokio": "#2ca02c"}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}"


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def fmt(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def summarize(runs):
    """cell -> server -> figures, keeping the order cells and servers ran in."""
    cells = OrderedDict()
    for r in runs:
        cells.setdefault(r["cell"], OrderedDict()).setdefault(r["server"], []).append(r)
    table = OrderedDict()
    for cell, by_server in cells.items():
        ref = {r["round"]: r for r in by_server.get(REFERENCE, [])}
        table[cell] = OrderedDict()
        for server, rs in by_server.items():
            reps = [r["report"] for r in rs if r["report"]]
            errors = sum(
                (r["report"]["errors"] and sum(r["report"]["errors"].values()) or 0)
                if r["report"]
                else 1
                for r in rs
            )
            failed = sum(1 for r in rs if r["exit"] != 0)
            ratios = []
            for r in rs:
                base = ref.get(r["round"])
                if r["report"] and base and base["report"] and base["report"]["msgs_per_s"]:
                    ratios.append(r["report"]["msgs_per_s"] / base["report"]["msgs_per_s"])
            server_figs = [x["server"] for x in reps if x.get("server")]
            table[cell][server] = {
                "rounds": len(rs),
                "failed": failed,
                "errors": errors,
                "connections": reps[0]["connections"] if reps else None,
                "up": min((x["connections_up"] for x in reps), default=None),
                "msgs": median([x["msgs_per_s"] for x in reps]),
                "mbs": median([x["mb_per_s"] for x in reps]),
                "ratio": median(ratios) if server != REFERENCE else 1.0 if ratios else None,
                "ratio_range": (min(ratios), max(ratios)) if len(ratios) > 1 and server != REFERENCE else None,
                "p99": median([x["latency_us"]["p99"] for x in reps]),
                "p50": median([x["latency_us"]["p50"] for x in reps]),
                "cpu": median([s["cpu_us_per_msg"] for s in server_figs]),
                "peak_rss": max((s["peak_rss_kib"] for s in server_figs), default=None),
                "idle_b": median([s.get("idle_bytes_per_conn") for s in server_figs]),
                "stalled": max((x["fairness"]["stalled"] for x in reps), default=None),
                "fair_min": min((x["fairness"]["min"] for x in reps), default=None),
                "lost": sum((x["udp"] or {}).get("lost", 0) for x in reps if x.get("udp")),
                "kind": reps[0]["kind"] if reps else "?",
            }
    return table


def markdown(table, args, with_chart):
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.  ",
        f"Command: `{args.command}` ({args.rounds} interleaved rounds, "
        f"{args.duration} s measured per run after a warm-up; server pinned to CPU 0, "
        "load generator to CPU 1; every reply verified byte for byte).",
        "",
        "Figures are medians over the rounds; *vs C* is the median of the per-round "
        f"ratios of msgs/s against `{REFERENCE}` in the same round. CPU is the server's "
        "user+system time per reply; peak RSS is the server's VmHWM. "
        "`errors` counts every failed check (wrong byte, reset, close, missing reply).",
        "",
        "| cell | server | msgs/s | vs C (range over rounds) | MB/s | server CPU µs/msg | p50 µs | p99 µs | peak RSS KiB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    idle_rows = []
    for cell, by_server in table.items():
        for server, f in by_server.items():
            err = f"{f['errors']}" + (f" ({f['failed']} runs failed)" if f["failed"] else "")
            if f["kind"] == "idle":
                idle_rows.append(
                    f"| {cell} | {server} | {fmt(f['up'])} of {fmt(f['connections'])} | "
                    f"{fmt(f['idle_b'])} | {fmt(f['peak_rss'])} | {err} |"
                )
                continue
            spread = ""
            if f["ratio_range"]:
                lo, hi = f["ratio_range"]
                spread = f" ({lo:.2f}–{hi:.2f})"
            extra = ""
            if f["kind"] == "udp" and f["lost"]:
                extra = f", {f['lost']} lost"
            lines.append(
                f"| {cell} | {server} | {fmt(f['msgs'])} | {fmt(f['ratio'], 2)}{spread} | "
                f"{fmt(f['mbs'], 1)} | {fmt(f['cpu'], 2)} | {fmt(f['p50'], 1)} | "
                f"{fmt(f['p99'], 1)} | {fmt(f['peak_rss'])} | {err}{extra} |"
            )
    if idle_rows:
        lines += [
            "",
            "Idle connections (each verified once, then held; user memory is the "
            "server's RSS growth divided by the connections, kernel socket buffers not included):",
            "",
            "| cell | server | connections held | user bytes per connection | peak RSS KiB | errors |",
            "|---|---|---:|---:|---:|---:|",
        ] + idle_rows
    stalled = [
        (cell, s, f["stalled"])
        for cell, by in table.items()
        for s, f in by.items()
        if f["kind"] == "tcp" and f["stalled"]
    ]
    lines += ["", "Fairness: "]
    if stalled:
        lines[-1] += "connections with no reply in a measured window: " + ", ".join(
            f"{c} / {s}: {n}" for c, s, n in stalled
        ) + "."
    else:
        lines[-1] += "every connection got replies in every measured window."
    if with_chart:
        lines += ["", "![throughput and p99 against connections](chart.svg)"]
    lines.append("")
    return "\n".join(lines)


def chart(table):
    """Two rows (64 B, 4 KiB) x two columns (msgs/s, p99), log x axis."""
    series = defaultdict(lambda: defaultdict(dict))  # size -> server -> conns -> fig
    for cell, by_server in table.items():
        if not cell.startswith("tcp ") or "pipeline" in cell:
            continue
        size = "4 KiB" if "4 KiB" in cell else "64 B"
        for server, f in by_server.items():
            if f["connections"] and f["msgs"] is not None:
                series[size][server][f["connections"]] = f
    if not series:
        return None  # no TCP cells by connection count (e.g. --ceiling-only)
    W, H, M = 420, 260, 60
    panels = []
    sizes = [s for s in ("64 B", "4 KiB") if s in series]
    import math

    for row, size in enumerate(sizes):
        for col, (key, label) in enumerate([("msgs", "msgs/s"), ("p99", "p99 latency µs (log)")]):
            x0, y0 = col * (W + M) + M, row * (H + M) + 40
            pts_all = [
                (c, f[key]) for s in series[size].values() for c, f in s.items() if f[key]
            ]
            if not pts_all:
                continue
            xs = sorted({c for c, _ in pts_all})
            ymax = max(v for _, v in pts_all) * 1.1
            # p99 spans milliseconds to a second: a log axis keeps the few
            # connections' values readable next to the 10,000's.
            logy = key == "p99"
            if logy:
                lo = 10 ** math.floor(math.log10(min(v for _, v in pts_all)))
                hi = 10 ** math.ceil(math.log10(ymax))
            lx = lambda c: x0 + (
                (math.log10(c) - math.log10(xs[0])) / max(1e-9, math.log10(xs[-1]) - math.log10(xs[0]))
            ) * W
            if logy:
                ly = lambda v: y0 + H - (math.log10(v) - math.log10(lo)) / (
                    math.log10(hi) - math.log10(lo)
                ) * H
                ticks = [lo * 10**i for i in range(round(math.log10(hi / lo)) + 1)]
            else:
                ly = lambda v: y0 + H - v / ymax * H
                ticks = [ymax * i / 4 for i in range(5)]
            p = [
                f'<rect x="{x0}" y="{y0}" width="{W}" height="{H}" fill="none" stroke="#999"/>',
                f'<text x="{x0 + W / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
                f"TCP {size}: {label}</text>",
            ]
            for v in ticks:
                p.append(
                    f'<text x="{x0 - 4}" y="{ly(v) + 4:.1f}" text-anchor="end" font-size="10">{v:,.0f}</text>'
                )
                p.append(f'<line x1="{x0}" x2="{x0 + W}" y1="{ly(v):.1f}" y2="{ly(v):.1f}" stroke="#eee"/>')
            for c in xs:
                p.append(
                    f'<text x="{lx(c):.1f}" y="{y0 + H + 14}" text-anchor="middle" font-size="10">{c:,}</text>'
                )
            p.append(
                f'<text x="{x0 + W / 2}" y="{y0 + H + 30}" text-anchor="middle" font-size="11">connections</text>'
            )
            for server, pts in series[size].items():
                pts = sorted((c, f[key]) for c, f in pts.items() if f[key] is not None)
                color = COLORS.get(server, "#555")
                path = " ".join(f"{lx(c):.1f},{ly(v):.1f}" for c, v in pts)
                p.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
                for c, v in pts:
                    p.append(f'<circle cx="{lx(c):.1f}" cy="{ly(v):.1f}" r="3" fill="{color}"/>')
            panels += p
    legend = []
    servers = sorted({s for size in series.values() for s in size})
    for i, s in enumerate(servers):
        legend.append(
            f'<rect x="{M + i * 140}" y="8" width="12" height="12" fill="{COLORS.get(s, "#555")}"/>'
            f'<text x="{M + i * 140 + 18}" y="19">{s}</text>'
        )
    width = 2 * (W + M) + 20
    height = max(1, len(sizes)) * (H + M) + 40
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(legend + panels)
        + "\n</svg>\n"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bench/run")
    ap.add_argument("--rounds", default="3")
    ap.add_argument("--duration", default="3")
    args = ap.parse_args()
    table = summarize(load(args.raw))
    svg = chart(table)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(markdown(table, args, svg is not None))
    if svg is not None:
        with open(os.path.join(args.out, "chart.svg"), "w") as f:
            f.write(svg)
    failed = sum(f["failed"] for by in table.values() for f in by.values())
    print(f"wrote {args.out}/latest.md" + (" and chart.svg" if svg else "") + f"; {failed} runs failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
