#!/usr/bin/env python3
"""Turns bench/run's raw results (one JSON line per run) into
results/latest.md (the tables and the check of issue 7's targets) and
results/chart.svg (throughput and p99 against connection count, one line per
server). Standard library only.

Ratios are paired: in each round a server's figure is divided by its
reference's figure of the same cell and round (they ran back to back), and
the tables show the median of those ratios, which cancels most of the drift
of a shared machine. The reference is the C server (`ref-epoll-c`) in the
matrix, and upcased in ascii mode (`upcased-ascii`) in the "mode:" and
"script:" cells, which measure what upcased's default unicode mode costs
(the script cells per script, on the corpora of bench/corpora)."""

import argparse
import json
import math
import os
import platform
import statistics
from collections import OrderedDict, defaultdict

SUBJECT = "upcased"
REFERENCE = "ref-epoll-c"
TOKIO_MT = "ref-tokio-mt"
MODE_REFERENCE = "upcased-ascii"
COLORS = {
    "upcased": "#d62728",
    "upcased-ascii": "#ff7f0e",
    "ref-epoll-c": "#1f77b4",
    "ref-tokio": "#2ca02c",
    "ref-tokio-mt": "#9467bd",
}
SERVERS = {
    "upcased": "upcased in its default `unicode` mode",
    "upcased-ascii": "upcased `--mode ascii` (mode and script cells only)",
    "ref-epoll-c": "the one-thread C epoll server",
    "ref-tokio": "tokio, current-thread runtime",
    "ref-tokio-mt": "tokio, `--multi-thread` (work-stealing) runtime",
}


def is_mode(cell):
    return cell.startswith("mode:")


def is_script(cell):
    return cell.startswith("script:")


def is_churn(cell):
    return cell.startswith("churn ")


def is_open_loop(cell):
    return cell.startswith("open loop:")


def is_special(cell):
    """Cells with tables of their own, outside the matrix and its targets."""
    return is_mode(cell) or is_script(cell) or is_churn(cell) or is_open_loop(cell)


def reference(cell):
    return MODE_REFERENCE if is_mode(cell) or is_script(cell) else REFERENCE


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


# Figures of one run (None where the run has no report or no such figure).
def msgs_of(run):
    return run["report"]["msgs_per_s"] if run and run["report"] else None


def cpu_of(run):
    s = run and run["report"] and run["report"].get("server")
    return s["cpu_us_per_msg"] if s else None


def p99_of(run):
    return run["report"]["latency_us"]["p99"] if run and run["report"] else None


def p999_of(run):
    return run["report"]["latency_us"]["p999"] if run and run["report"] else None


def cps_of(run):
    return run["report"].get("connections_per_second") if run and run["report"] else None


def cpu_conn_of(run):
    s = run and run["report"] and run["report"].get("server")
    return s.get("cpu_us_per_conn") if s else None


def run_errors(run):
    """Failed checks of a run; a run without a report counts as one."""
    rep = run["report"]
    if not rep:
        return 1
    return sum(rep["errors"].values()) if rep["errors"] else 0


class Ratio:
    """The median of paired per-round ratios, with their range."""

    def __init__(self, ratios):
        self.ratios = ratios
        self.median = median(ratios)
        self.lo = min(ratios) if ratios else None
        self.hi = max(ratios) if ratios else None

    def __bool__(self):
        return self.median is not None

    def show(self, spread=True, digits=2):
        if not self:
            return "–"
        s = f"{self.median:.{digits}f}"
        if spread and len(self.ratios) > 1:
            s += f" ({self.lo:.{digits}f}–{self.hi:.{digits}f})"
        return s


def paired(a, b, key):
    """Ratio of key over the rounds two by-round run maps have in common."""
    ratios = []
    for rnd, ra in (a or {}).items():
        va, vb = key(ra), key((b or {}).get(rnd))
        if va is not None and vb:
            ratios.append(va / vb)
    return Ratio(ratios)


def summarize(runs):
    """cell -> server -> figures, keeping the order cells and servers ran in."""
    cells = OrderedDict()
    for r in runs:
        cells.setdefault(r["cell"], OrderedDict()).setdefault(r["server"], []).append(r)
    table = OrderedDict()
    for cell, by_server in cells.items():
        table[cell] = OrderedDict()
        for server, rs in by_server.items():
            reps = [r["report"] for r in rs if r["report"]]
            server_figs = [x["server"] for x in reps if x.get("server")]
            first = reps[0] if reps else {}
            table[cell][server] = {
                "by_round": {r["round"]: r for r in rs},
                "rounds": len(rs),
                "failed": sum(1 for r in rs if r["exit"] != 0),
                "errors": sum(run_errors(r) for r in rs),
                "connections": first.get("connections"),
                "size": first.get("size"),
                "pipeline": first.get("pipeline"),
                "payload": first.get("payload"),
                "kind": first.get("kind", "?"),
                "up": min((x["connections_up"] for x in reps), default=None),
                "msgs": median([x["msgs_per_s"] for x in reps]),
                "mbs": median([x["mb_per_s"] for x in reps]),
                "p99": median([x["latency_us"]["p99"] for x in reps]),
                "p50": median([x["latency_us"]["p50"] for x in reps]),
                "cpu": median([s["cpu_us_per_msg"] for s in server_figs]),
                "peak_rss": max((s["peak_rss_kib"] for s in server_figs), default=None),
                "idle_b": median([s.get("idle_bytes_per_conn") for s in server_figs]),
                "stalled": max((x["fairness"]["stalled"] for x in reps), default=None),
                "lost": sum((x["udp"] or {}).get("lost", 0) for x in reps if x.get("udp")),
                "threads": [r.get("threads") for r in rs if r.get("threads")],
                "cps": median([x.get("connections_per_second") for x in reps]),
                "cpu_conn": median([(x.get("server") or {}).get("cpu_us_per_conn") for x in reps]),
                "churn": [x["churn"] for x in reps if x.get("churn")],
                "open_loop": [x["open_loop"] for x in reps if x.get("open_loop")],
                "p999": median([x["latency_us"]["p999"] for x in reps]),
                "p9999": median([x["latency_us"].get("p9999") for x in reps]),
            }
        ref = table[cell].get(reference(cell))
        tokio_mt = table[cell].get(TOKIO_MT)
        for server, f in table[cell].items():
            runs_of = f["by_round"]
            f["vs_ref"] = paired(runs_of, ref and ref["by_round"], msgs_of)
            f["cpu_vs_ref"] = paired(runs_of, ref and ref["by_round"], cpu_of)
            f["p99_vs_ref"] = paired(runs_of, ref and ref["by_round"], p99_of)
            f["vs_tokio_mt"] = paired(runs_of, tokio_mt and tokio_mt["by_round"], msgs_of)
    return table


def threads_line(table):
    """What threads each server ran with, as /proc showed them at the end
    of each run (the thread names and how many of each)."""
    seen = OrderedDict()
    for by_server in table.values():
        for server, f in by_server.items():
            for t in f["threads"]:
                key = tuple(sorted(t.items()))
                seen.setdefault(server, OrderedDict())
                seen[server][key] = seen[server].get(key, 0) + 1
    parts = []
    for server, shapes in seen.items():
        shown = []
        for shape, n in shapes.items():
            total = sum(c for _, c in shape)
            names = ", ".join(f"{name} ×{c}" for name, c in shape)
            shown.append(f"{total} ({names})" + (f" in {n} runs" if len(shapes) > 1 else ""))
        parts.append(f"{server}: " + "; ".join(shown))
    return "; ".join(parts)


def tokio_mt_workers(table):
    """The tokio runtime threads ref-tokio-mt had, per run (its workers:
    ref-tokio spawns no blocking tasks, so the runtime's threads are all
    workers; the main thread runs the accept loop in block_on)."""
    counts = set()
    for by_server in table.values():
        f = by_server.get(TOKIO_MT)
        for t in f["threads"] if f else []:
            counts.add(sum(c for name, c in t.items() if name.startswith("tokio-")))
    return sorted(counts)


def header(table, args):
    servers = list(OrderedDict.fromkeys(s for by in table.values() for s in by))
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.  ",
        f"Command: `{args.command}` ({args.rounds} interleaved "
        f"round{'' if str(args.rounds) == '1' else 's'}, "
        f"{args.duration} measured per run after a warm-up; every server pinned to CPU 0, "
        "the load generator to CPU 1; every reply verified byte for byte).",
        "",
        "Servers: " + "; ".join(f"`{s}`, {SERVERS.get(s, s)}" for s in servers) + ".",
    ]
    if TOKIO_MT in servers:
        workers = tokio_mt_workers(table)
        lines[-1] += (
            f" `{TOKIO_MT}` has the same one-core budget as the others: pinned to CPU 0, "
            "it lets tokio choose its worker count from the CPU affinity mask, which gave it "
            + ("/".join(map(str, workers)) if workers else "an unknown number of")
            + " worker thread" + ("" if workers == [1] else "s")
            + " next to the main thread that runs the accept loop."
        )
    threads = threads_line(table)
    if threads:
        lines += ["", f"Threads per server (from /proc at the end of each run): {threads}."]
    return lines


def markdown(table, args, with_chart):
    lines = header(table, args) + [
        "",
        "Figures are medians over the rounds; *vs C* is the median of the per-round "
        f"ratios of msgs/s against `{REFERENCE}` in the same round (range over the rounds "
        f"in brackets), *vs tokio-mt* the same against `{TOKIO_MT}`, *CPU vs C* the same for "
        "server CPU per message. CPU is the server's user+system time per reply; peak RSS "
        "is the server's VmHWM. `errors` counts every failed check (wrong byte, reset, "
        "close, missing reply).",
        "",
        "| cell | server | msgs/s | vs C (range over rounds) | vs tokio-mt | MB/s | "
        "server CPU µs/msg | CPU vs C | p50 µs | p99 µs | peak RSS KiB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    idle_rows, mode_rows = [], []
    for cell, by_server in table.items():
        for server, f in by_server.items():
            err = f"{f['errors']}" + (f" ({f['failed']} runs failed)" if f["failed"] else "")
            if f["kind"] == "udp" and f["lost"]:
                err += f", {f['lost']} lost"
            if f["kind"] == "idle":
                idle_rows.append(
                    f"| {cell} | {server} | {fmt(f['up'])} of {fmt(f['connections'])} | "
                    f"{fmt(f['idle_b'])} | {fmt(f['peak_rss'])} | {err} |"
                )
                continue
            is_ref = server == reference(cell)
            if is_churn(cell) or is_open_loop(cell) or is_script(cell):
                continue
            if is_mode(cell):
                per_byte = f["cpu"] * 1000 / f["size"] if f["cpu"] is not None and f["size"] else None
                mode_rows.append(
                    f"| {cell} | {server} | {f['payload'] or '?'} | {fmt(f['msgs'])} | "
                    f"{'1.00' if is_ref and f['vs_ref'] else f['vs_ref'].show()} | "
                    f"{fmt(f['mbs'], 1)} | {fmt(f['cpu'], 2)} | "
                    f"{'1.00' if is_ref and f['cpu_vs_ref'] else f['cpu_vs_ref'].show()} | "
                    f"{fmt(per_byte, 2)} | {fmt(f['p99'], 1)} | {fmt(f['peak_rss'])} | {err} |"
                )
                continue
            lines.append(
                f"| {cell} | {server} | {fmt(f['msgs'])} | "
                f"{'1.00' if is_ref and f['vs_ref'] else f['vs_ref'].show()} | "
                f"{'1.00' if server == TOKIO_MT and f['vs_tokio_mt'] else f['vs_tokio_mt'].show(False)} | "
                f"{fmt(f['mbs'], 1)} | {fmt(f['cpu'], 2)} | "
                f"{'1.00' if is_ref and f['cpu_vs_ref'] else f['cpu_vs_ref'].show(False)} | "
                f"{fmt(f['p50'], 1)} | {fmt(f['p99'], 1)} | {fmt(f['peak_rss'])} | {err} |"
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
    if mode_rows:
        lines += [
            "",
            "## Unicode mode against ascii mode",
            "",
            f"`{SUBJECT}` (default `unicode` mode) against `{MODE_REFERENCE}` (`--mode ascii`), "
            f"back to back in each round; *vs ascii* is the median of the per-round ratios against "
            f"`{MODE_REFERENCE}` (range in brackets). CPU per byte is per request byte.",
            "",
            "| cell | server | payload | msgs/s | vs ascii | MB/s | server CPU µs/msg | "
            "CPU vs ascii | CPU ns/byte | p99 µs | peak RSS KiB | errors |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ] + mode_rows
        lines += non_ascii_cost(table)
    lines += script_section(table)
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
    lines += churn_section(table) + open_loop_section(table)
    if any(r for by in table.values() for f in by.values() for r in f["by_round"].values()
           if r.get("timeline")):
        lines += ["", "Throughput and p99 of each second of the churn and open-loop runs "
                  "(round 1; from `--timeline`):", "", "![throughput and p99 over time](timeline.svg)"]
    lines += targets(table)
    lines.append("")
    return "\n".join(lines)


def shape(f):
    return (f["kind"], f["connections"], f["size"], f["pipeline"])


def utf8_pairs(table):
    """(utf8 cell, its ascii-text twin or None) for the mode cells: the
    twin is the mode cell of the same kind, connections, size and pipeline
    with the ascii payload."""
    pairs = []
    for cell, by in table.items():
        f = by.get(SUBJECT)
        if not is_mode(cell) or not f or f["payload"] != "utf8":
            continue
        twin = next(
            (
                c
                for c, b in table.items()
                if is_mode(c)
                and b.get(SUBJECT)
                and b[SUBJECT]["payload"] == "ascii"
                and shape(b[SUBJECT]) == shape(f)
            ),
            None,
        )
        pairs.append((cell, twin))
    return pairs


def non_ascii_cost(table):
    """The utf8 cell's CPU per message and per byte next to its ascii-text
    twin's, with the ratios paired by round (the two cells ran in the same
    rounds, minutes rather than seconds apart)."""
    lines = []
    for cell, twin in utf8_pairs(table):
        u = table[cell][SUBJECT]
        rows = [(cell, SUBJECT, u)]
        if twin:
            rows = [(twin, s, table[twin][s]) for s in (MODE_REFERENCE, SUBJECT) if s in table[twin]] + rows
        lines += [
            "",
            f"Mostly non-ASCII text ({cell}) next to ASCII text of the same shape: "
            "CPU per message and per request byte, and the utf8 run's CPU over each "
            "ascii-text row's (median of per-round ratios).",
            "",
            "| cell | server | server CPU µs/msg | CPU ns/byte | utf8 on unicode over this |",
            "|---|---|---:|---:|---:|",
        ]
        for c, s, f in rows:
            per_byte = f["cpu"] * 1000 / f["size"] if f["cpu"] is not None and f["size"] else None
            over = "" if c == cell else paired(u["by_round"], f["by_round"], cpu_of).show()
            lines.append(f"| {c} | {s} | {fmt(f['cpu'], 2)} | {fmt(per_byte, 2)} | {over} |")
    return lines


# Issue 18's limit on unicode mode's CPU per message over ascii mode's, on
# the same text that is not ASCII.
SCRIPT_LIMIT = 1.5


def script_name(cell, f):
    """The corpus of a script cell (from its payload, file:NAME), or the
    mode cell's generated payload."""
    payload = f.get("payload") or ""
    if payload.startswith("file:"):
        return payload[len("file:"):].rsplit(".", 1)[0]
    return f"{payload} (generated, {cell})"


def same_text_cells(table):
    """Cells where upcased and upcased-ascii got the same requests that are
    not all ASCII: the script cells and the mode cells of the utf8 payload,
    in the order they ran."""
    return [
        c
        for c, by in table.items()
        if SUBJECT in by
        and MODE_REFERENCE in by
        and (is_script(c) or (is_mode(c) and by[SUBJECT]["payload"] == "utf8"))
    ]


def is_text(cell, table):
    """Whether a same-text cell's requests are text (not the invalid-bytes
    corpus), for the limit."""
    return "invalid" not in (table[cell][SUBJECT]["payload"] or "")


def script_section(table):
    cells = same_text_cells(table)
    if not cells:
        return []
    rows = []
    for cell in cells:
        u, a = table[cell][SUBJECT], table[cell][MODE_REFERENCE]
        r = paired(u["by_round"], a["by_round"], cpu_of)
        per_byte = lambda f: f["cpu"] * 1000 / f["size"] if f["cpu"] is not None and f["size"] else None
        if not r:
            verdict_cell = "–"
        elif not is_text(cell, table):
            verdict_cell = ("yes" if r.median <= SCRIPT_LIMIT else "no") + " (not text)"
        else:
            verdict_cell = "yes" if r.median <= SCRIPT_LIMIT else "**no**"
        errors = u["errors"] + a["errors"]
        failed = u["failed"] + a["failed"]
        rows.append(
            f"| {script_name(cell, u)} | {fmt(u['cpu'], 2)} | {fmt(a['cpu'], 2)} | {r.show()} | "
            f"{verdict_cell} | {fmt(per_byte(u), 2)} | {fmt(per_byte(a), 2)} | "
            f"{fmt(u['msgs'])} | {fmt(a['msgs'])} | {errors}"
            + (f" ({failed} runs failed)" if failed else "")
            + " |"
        )
    shape = table[cells[0]][SUBJECT]
    return [
        "",
        "## Unicode mode against ascii mode, per script",
        "",
        f"`{SUBJECT}` (unicode mode) and `{MODE_REFERENCE}` got the same requests, back to back "
        "in each round: the script cells send a corpus of bench/corpora "
        "(`upcase-bench --payload-file`: its consecutive 4 KiB pieces, cut short of a split "
        "character; `--mode ascii` for upcased-ascii, whose replies to non-ASCII text rightly "
        f"differ), {fmt(shape['connections'])} connections. CPU is the whole server's "
        "user+system time per reply, the median over the rounds; *unicode ÷ ascii* the median "
        f"of the per-round ratios (range in brackets). Issue 18's limit: ≤ {SCRIPT_LIMIT}× on "
        "text (the invalid bytes are shown, not held to it). The transform alone, per script, "
        "is `bench/transform`'s table.",
        "",
        "| script | unicode CPU µs/msg | ascii CPU µs/msg | unicode ÷ ascii | "
        f"≤ {SCRIPT_LIMIT}× | unicode ns/byte | ascii ns/byte | unicode msgs/s | ascii msgs/s | errors |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ] + rows


# --- issue 7's targets, checked from the figures above ----------------------


def verdict(results):
    """results: [(label, ok or None for no figure)]. Met only if there is at
    least one figure and every figure passes; a missing figure fails."""
    if not results:
        return "not checked"
    return "**met**" if all(ok for _, ok in results) else "**not met**"


def figures(results):
    return "; ".join(label + ("" if ok else " ✗") for label, ok in results) or "–"


def digits_for(x, limit):
    """Three digits, or more where a figure that is not the limit would
    print as the limit itself (1.1004 against 1.1)."""
    digits = 3
    while x is not None and x != limit and digits < 6 and f"{x:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    return digits


def ratio_checks(table, cells, server, base, key, limit, above=False):
    """[(label, ok)] of the paired median ratio server/base of key in cells,
    against limit (≤ limit, or ≥ limit if above)."""
    out = []
    for cell in cells:
        by = table[cell]
        if server not in by or base not in by:
            continue
        r = paired(by[server]["by_round"], by[base]["by_round"], key)
        ok = None if not r else (r.median >= limit if above else r.median <= limit)
        out.append((f"{cell}: {r.show(False, digits_for(r.median, limit))}", ok))
    return out


def targets(table):
    rows = []
    rounds = max((len(f["by_round"]) for by in table.values() for f in by.values()), default=0)
    rows.append(("0", "≥ 5 rounds in the run", f"{rounds}", "**met**" if rounds >= 5 else "**not met**"))

    def matrix(pred):
        return [
            c
            for c, by in table.items()
            if not is_special(c) and SUBJECT in by and pred(by[SUBJECT])
        ]

    busy = lambda f: f["kind"] in ("tcp", "udp")
    wide = matrix(
        lambda f: (f["kind"] == "tcp" and f["connections"] in (100, 1000, 10000))
        or (f["kind"] == "udp" and (f["connections"] or 0) >= 100)
    )
    single = matrix(lambda f: busy(f) and f["connections"] == 1)
    r = ratio_checks(table, wide, SUBJECT, REFERENCE, cpu_of, 0.9)
    rows.append(("1a", "server CPU/msg ≤ 0.9× C (TCP 100/1000/10000 conns incl. pipelined, UDP ≥ 100 flows)",
                 figures(r), verdict(r)))
    r = ratio_checks(table, single, SUBJECT, REFERENCE, cpu_of, 1.0)
    rows.append(("1b", "server CPU/msg ≤ 1.0× C (1 connection or flow)", figures(r), verdict(r)))

    many = matrix(lambda f: busy(f) and (f["connections"] or 0) >= 100)
    r = ratio_checks(table, many, SUBJECT, REFERENCE, msgs_of, 0.97, above=True)
    rows.append(("2a", "msgs/s ≥ 0.97× C (every cell with ≥ 100 connections or flows, ceiling cells too if run)", figures(r), verdict(r)))
    r = ratio_checks(table, many, SUBJECT, TOKIO_MT, msgs_of, 1.1, above=True)
    rows.append(("2b", f"msgs/s ≥ 1.1× {TOKIO_MT} (same cells)", figures(r), verdict(r)))

    ascii_mode = [c for c, by in table.items() if is_mode(c) and by.get(SUBJECT, {}).get("payload") == "ascii"]
    r = ratio_checks(table, ascii_mode, SUBJECT, MODE_REFERENCE, cpu_of, 1.1)
    rows.append(("3a", "unicode mode ≤ 1.1× ascii mode, CPU/msg on ASCII traffic", figures(r), verdict(r)))
    cost = []
    for cell, twin in utf8_pairs(table):
        u = table[cell][SUBJECT]
        per_byte = u["cpu"] * 1000 / u["size"] if u["cpu"] is not None and u["size"] else None
        label = f"{cell}: {fmt(u['cpu'], 2)} µs/msg, {fmt(per_byte, 2)} ns/byte"
        if twin and MODE_REFERENCE in table[twin]:
            x = paired(u["by_round"], table[twin][MODE_REFERENCE]["by_round"], cpu_of)
            label += f", {x.show(False)}× ascii mode on ASCII text"
        cost.append(label)
    rows.append(("3b", "unicode mode's cost on mostly non-ASCII text over ascii mode on ASCII text (no limit set)",
                 "; ".join(cost) or "–", "measured" if cost else "not measured"))
    same = [c for c in same_text_cells(table) if is_text(c, table)]
    r = ratio_checks(table, same, SUBJECT, MODE_REFERENCE, cpu_of, SCRIPT_LIMIT)
    rows.append(("3c", f"unicode mode ≤ {SCRIPT_LIMIT}× ascii mode, CPU/msg on the same text, every script "
                 "(issue 18; the script cells but invalid bytes, and the utf8 mode cell)", figures(r), verdict(r)))

    idle = matrix(lambda f: f["kind"] == "idle" and f["connections"] == 10000)
    r = []
    for c in idle:
        b = table[c][SUBJECT]["idle_b"]
        r.append((f"{c}: {fmt(b)} B", None if b is None else b <= 128))
    rows.append(("4a", "idle user memory ≤ 128 B per connection at 10,000 idle", figures(r), verdict(r)))
    peaks = [(f["peak_rss"], c) for c, by in table.items() for s, f in by.items()
             if s == SUBJECT and f["peak_rss"] is not None]
    if peaks:
        peak, where = max(peaks)
        r = [(f"{fmt(peak)} KiB ({where})", peak <= 8192)]
    else:
        r = []
    rows.append(("4b", f"{SUBJECT}'s peak RSS ≤ 8 MB (8,192 KiB) over the whole run", figures(r), verdict(r)))

    fair = matrix(lambda f: f["kind"] == "tcp" and f["connections"] == 10000)
    r = []
    for c in fair:
        worst, stalled = None, 0
        for run in table[c][SUBJECT]["by_round"].values():
            fa = run["report"] and run["report"]["fairness"]
            if not fa:
                worst = 0.0
                continue
            stalled = max(stalled, fa["stalled"])
            share = fa["min"] / fa["mean"] if fa["mean"] else 0.0
            worst = share if worst is None else min(worst, share)
        ok = None if worst is None else (stalled == 0 and worst >= 0.5)
        r.append((f"{c}: stalled {stalled}, slowest {fmt(worst, 2)}× mean", ok))
    rows.append(("5a", "fairness at 10,000 connections, every round: none stalled, slowest ≥ 0.5× mean",
                 figures(r), verdict(r)))
    mid = matrix(lambda f: f["kind"] == "tcp" and f["connections"] in (100, 1000))
    r = ratio_checks(table, mid, SUBJECT, REFERENCE, p99_of, 1.0)
    rows.append(("5b", "p99 ≤ C's at 100 and 1,000 connections (paired median of p99 ratios)",
                 figures(r), verdict(r)))

    bad = [(f"{c} / {s}: {f['errors']} errors" + (f", {f['failed']} runs failed" if f["failed"] else ""), False)
           for c, by in table.items() for s, f in by.items() if f["errors"] or f["failed"]]
    runs = sum(f["rounds"] for by in table.values() for f in by.values())
    rows.append(("6", "every cell zero errors (every server, every round)",
                 figures(bad) if bad else f"0 errors in {runs} runs",
                 "**not met**" if bad else ("**met**" if runs else "not checked")))

    lines = [
        "",
        "## Targets",
        "",
        "Issue 7's targets, checked from the figures of this run: each ratio is "
        f"`{SUBJECT}` over the other server, the median of the per-round paired ratios; "
        "a target is met when every cell it covers passes (✗ marks a cell that does "
        "not), not checked when the run has no cell for it.",
        "",
        "| # | target | figures | result |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {what} | {figs} | {res} |" for n, what, figs, res in rows]
    return lines


def phase_p(f, phase, key):
    """Median over the rounds of one churn phase's percentile."""
    return median([c[phase][key] for c in f["churn"]])


def churn_section(table):
    rows = []
    for cell, by in table.items():
        if not is_churn(cell):
            continue
        ref = by.get(REFERENCE)
        for server, f in by.items():
            is_ref = server == REFERENCE
            vs = paired(f["by_round"], ref and ref["by_round"], cps_of)
            cpu_vs = paired(f["by_round"], ref and ref["by_round"], cpu_conn_of)
            failures = [c["failures"] for c in f["churn"]]
            by_phase = "/".join(str(sum(x[k] for x in failures)) for k in ("connect", "exchange", "close"))
            err = f"{f['errors']}" + (f" ({f['failed']} runs failed)" if f["failed"] else "")
            rows.append(
                f"| {cell} | {server} | {fmt(f['cps'])} | {'1.00' if is_ref and vs else vs.show()} | "
                f"{fmt(f['cpu_conn'], 2)} | {'1.00' if is_ref and cpu_vs else cpu_vs.show()} | "
                f"{fmt(phase_p(f, 'connect_us', 'p50'), 1)} / {fmt(phase_p(f, 'connect_us', 'p99'), 1)} | "
                f"{fmt(phase_p(f, 'first_reply_us', 'p50'), 1)} / {fmt(phase_p(f, 'first_reply_us', 'p99'), 1)} | "
                f"{fmt(phase_p(f, 'close_us', 'p50'), 1)} / {fmt(phase_p(f, 'close_us', 'p99'), 1)} | "
                f"{by_phase} | {err} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Connection churn",
        "",
        "`upcase-bench churn`: each client loops connect, one 64 B request, verify, close "
        "(`fin`: half-close and await the server's EOF; `rst`: `SO_LINGER` 0). Connections/s "
        "and server CPU per connection are medians over the rounds, *vs C* the median of the "
        f"per-round ratios against `{REFERENCE}` (range in brackets); phase latencies are "
        "medians of each run's p50 / p99, in µs. Failures by phase: connect/exchange/close.",
        "",
        "| cell | server | connections/s | vs C | server CPU µs/conn | CPU vs C | "
        "connect p50 / p99 | first reply p50 / p99 | close p50 / p99 | failures | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + rows


def open_loop_section(table):
    rows = []
    for cell, by in table.items():
        if not is_open_loop(cell):
            continue
        ref = by.get(REFERENCE)
        for server, f in by.items():
            is_ref = server == REFERENCE
            ol = f["open_loop"]
            offered = median([o["offered_per_s"] for o in ol])
            achieved = median([o["achieved_per_s"] for o in ol])
            late = sum(o["sent_late"] for o in ol)
            sent = sum(o["sent"] for o in ol)
            p99_vs = paired(f["by_round"], ref and ref["by_round"], p99_of)
            p999_vs = paired(f["by_round"], ref and ref["by_round"], p999_of)
            err = f"{f['errors']}" + (f" ({f['failed']} runs failed)" if f["failed"] else "")
            rows.append(
                f"| {cell} | {server} | {fmt(offered)} | {fmt(achieved)} | {fmt(f['p50'], 1)} | "
                f"{fmt(f['p99'], 1)} | {'1.00' if is_ref and p99_vs else p99_vs.show()} | "
                f"{fmt(f['p999'], 1)} | {'1.00' if is_ref and p999_vs else p999_vs.show()} | "
                f"{fmt(f['p9999'], 1)} | {late:,} of {sent:,} | {err} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Open loop: the same offered load",
        "",
        "`upcase-bench tcp --rate R`: R requests a second spread evenly over the connections, "
        "each sent at its scheduled time (or as soon after as its connection has one of its 4 "
        "slots free) and timed from that time, so a server's stall shows in the latency of "
        "every request it delayed (coordinated omission corrected, as wrk2 does). R is 50% and "
        "90% of the calibration run's msgs/s (`calibration.json`). Latency in µs, medians over "
        f"the rounds; *vs C* the median of per-round ratios against `{REFERENCE}`. "
        "*late*: sends more than 1 ms after their time, in all rounds.",
        "",
        "| cell | server | offered/s | achieved/s | p50 | p99 | p99 vs C | p99.9 | p99.9 vs C | "
        "p99.99 | late | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + rows


def timeline_chart(table):
    """Per churn or open-loop cell, throughput and p99 of each second of
    round 1 (the measured window and the seconds around it), one line per
    server."""
    cells = []
    for cell, by in table.items():
        series = {}
        for server, f in by.items():
            run = f["by_round"].get(1) or next(iter(f["by_round"].values()), None)
            rows = (run or {}).get("timeline") or []
            if rows:
                series[server] = rows
        if series:
            cells.append((cell, series))
    if not cells:
        return None
    W, H, M = 420, 160, 60
    out = []
    for row, (cell, series) in enumerate(cells):
        y0 = row * (H + M) + 40
        churn = is_churn(cell)
        for col, (key, label) in enumerate([
            ("rate", ("connections" if churn else "replies") + "/s"),
            ("p99_us", "p99 µs"),
        ]):
            x0 = col * (W + M) + M
            pts = {}
            for server, rows in series.items():
                p = []
                for r in rows:
                    span = r.get("span_s") or 1.0
                    if key == "rate":
                        v = (r["connections"] if churn else r["replies"]) / span
                    else:
                        v = r.get("p99_us")
                    if v is not None:
                        p.append((r["second"] + span / 2, v))
                pts[server] = p
            allp = [v for p in pts.values() for v in p]
            if not allp:
                continue
            xmax = max(x for x, _ in allp) or 1.0
            ymax = max(v for _, v in allp) * 1.1 or 1.0
            lx = lambda x: x0 + x / xmax * W
            ly = lambda v: y0 + H - v / ymax * H
            out.append(f'<rect x="{x0}" y="{y0}" width="{W}" height="{H}" fill="none" stroke="#999"/>')
            out.append(f'<text x="{x0 + W / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
                       f"{cell}: {label}</text>")
            for i in range(5):
                v = ymax * i / 4
                out.append(f'<text x="{x0 - 4}" y="{ly(v) + 4:.1f}" text-anchor="end" font-size="10">{v:,.0f}</text>')
            out.append(f'<text x="{x0 + W / 2}" y="{y0 + H + 14}" text-anchor="middle" font-size="10">'
                       f"seconds since start (0 – {xmax:.1f})</text>")
            for server, p in pts.items():
                color = COLORS.get(server, "#555")
                path = " ".join(f"{lx(x):.1f},{ly(v):.1f}" for x, v in p)
                out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    servers = list(OrderedDict.fromkeys(s for _, series in cells for s in series))
    legend = [
        f'<rect x="{M + i * 140}" y="8" width="12" height="12" fill="{COLORS.get(s, "#555")}"/>'
        f'<text x="{M + i * 140 + 18}" y="19">{s}</text>'
        for i, s in enumerate(servers)
    ]
    width = 2 * (W + M) + 20
    height = len(cells) * (H + M) + 40
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(legend + out) + "\n</svg>\n"
    )


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
    # In the order the servers ran, so the colours read as in the tables.
    servers = list(OrderedDict.fromkeys(s for size in series.values() for s in size))
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
    ap.add_argument("--rounds", default="5")
    ap.add_argument("--duration", default="3s")
    args = ap.parse_args()
    table = summarize(load(args.raw))
    svg = chart(table)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(markdown(table, args, svg is not None))
    if svg is not None:
        with open(os.path.join(args.out, "chart.svg"), "w") as f:
            f.write(svg)
    timeline = timeline_chart(table)
    if timeline is not None:
        with open(os.path.join(args.out, "timeline.svg"), "w") as f:
            f.write(timeline)
    failed = sum(f["failed"] for by in table.values() for f in by.values())
    print(f"wrote {args.out}/latest.md" + (" and chart.svg" if svg else "") + f"; {failed} runs failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
