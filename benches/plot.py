#!/usr/bin/env python3
"""The comparison benchmark as a picture and as tables (python3 stdlib only).

    python3 benches/plot.py              # the newest run in benches/results/
    python3 benches/plot.py RUN.tsv      # a given run

Reads one recorded run of `cargo bench --bench compare` (the TSV it prints)
and writes:

* benches/results/latest.svg: per row, the crate, the raw OS floor and
  Python as bars on a log scale, unpinned, same-core and cross-core side
  by side (rows that are not round trips have no cross-core figures). Every
  figure is drawn as its cost relative to the raw floor (time per operation
  divided by the floor's; for throughput rows, the floor's rate divided by
  the figure), so 1x is the floor and shorter is faster whatever the unit;
  each bar is labelled with the measured figure itself.
* the table of every row between the `compare-table` markers of
  benches/README.md, and the short table between the `compare-summary`
  markers of README.md.

The newest run is the one with the latest date in its name
(`YYYY-MM-DD.tsv`, then `YYYY-MM-DD-2.tsv`, `-3`... for later runs of a day).
"""

import math
import re
import sys
from html import escape
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
RESULTS = BENCHES / "results"
SVG_OUT = RESULTS / "latest.svg"
BENCH_README = BENCHES / "README.md"
MAIN_README = BENCHES.parent / "README.md"

MODES = ("unpinned", "same_core", "cross_core")
# Mode names of older runs, read as today's.
OLD_MODES = {"pinned": "same_core"}
SIDES = ("crate", "raw", "python")
COLOURS = {"crate": "#2b6cb0", "raw": "#8a8a8a", "python": "#dd8a2e"}
LABELS = {"crate": "multiproc", "raw": "raw OS floor", "python": "Python"}
# Other implementations some rows measure beside the crate (`<row>.<mode>.<side>`),
# listed in a table of their own under the main one.
PEERS = {"go": "Go"}
LOWER_IS_BETTER = {"us", "ns", "B"}
HIGHER_IS_BETTER = {"msgs/s", "GB/s", "ops/s"}
TIME_UNITS = ["ns", "us", "ms", "s"]

# The rows of the short table in the main README (unpinned figures).
SUMMARY = [
    ("process.spawn", "start + join a spawned child"),
    ("pipe.pingpong.small", "pipe round trip, 16 B"),
    ("pipe.throughput.1mib", "pipe throughput, 1 MiB messages"),
    ("queue.1p1c.small", "queue, 1 producer 1 consumer, small messages"),
    ("queue.pingpong", "queue round trip"),
    ("sync.lock.uncontended", "lock + unlock, uncontended"),
    ("pool.map.chunksize1_100k", "pool map, chunk size 1, per task"),
    ("manager.list_append_child", "manager list append from a child"),
    ("csp.commstime.processes", "CSP commstime, OS processes"),
    ("csp.commstime.light", "CSP commstime, lightweight processes (Python: PyCSP greenlets)"),
]


def run_key(path):
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:-(\d+))?\.tsv", path.name)
    return (m.group(1), int(m.group(2) or 1)) if m else ("", 0)


def newest_run():
    runs = [p for p in RESULTS.glob("*.tsv") if run_key(p)[0]]
    if not runs:
        sys.exit(f"no YYYY-MM-DD[-N].tsv run in {RESULTS}")
    return max(runs, key=run_key)


def parse(path):
    """(header comment, {row: {"unit": u, mode: {side: value}}}, row order)."""
    header, rows, order = "", {}, []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if not header:
                header = line.lstrip("# ").strip()
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, value, unit = parts
        pieces = name.split(".")
        if len(pieces) >= 3:
            pieces[-2] = OLD_MODES.get(pieces[-2], pieces[-2])
        if len(pieces) < 3 or pieces[-2] not in MODES:
            continue
        row, mode, side = ".".join(pieces[:-2]), pieces[-2], pieces[-1]
        if side.startswith("vs_"):
            continue
        if row not in rows:
            rows[row] = {}
            order.append(row)
        entry = rows[row]
        if side in SIDES:
            entry["unit"] = unit
        entry.setdefault(mode, {})[side] = float(value)
    return header, rows, order


def human(value, unit):
    if unit == "B":
        for size, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= size:
                return f"{value / size:.3g} {name}"
        return f"{value:.0f} B"
    if unit == "count":
        return f"{value:.0f}"
    if unit in TIME_UNITS:
        i = TIME_UNITS.index(unit)
        while value >= 1000 and i + 1 < len(TIME_UNITS):
            value, i = value / 1000, i + 1
        return f"{value:.4g} {TIME_UNITS[i]}"
    if unit != "GB/s":
        # (from, divisor, prefix): "k" only from 10 k on.
        for start, size, prefix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
            if value >= start:
                return f"{value / size:.3g} {prefix} {unit}"
    return f"{value:.4g} {unit}"


def relative_cost(value, raw, unit):
    if value <= 0 or raw <= 0:
        return None
    if unit in LOWER_IS_BETTER:
        return value / raw
    if unit in HIGHER_IS_BETTER:
        return raw / value
    return None


def svg(path, header, rows, order):
    plotted = [r for r in order if rows[r].get("unit") in LOWER_IS_BETTER | HIGHER_IS_BETTER]
    costs = []
    for row in plotted:
        for mode in MODES:
            figures = rows[row].get(mode, {})
            raw = figures.get("raw")
            for side in SIDES:
                if raw and side in figures:
                    c = relative_cost(figures[side], raw, rows[row]["unit"])
                    if c:
                        costs.append(c)
    lo = 10 ** math.floor(math.log10(min(costs)))
    hi = 10 ** math.ceil(math.log10(max(costs)))
    decades = round(math.log10(hi / lo))

    label_w, panel_w, gap = 250, 430, 30
    bar_h, row_h, top = 7, 30, 112
    width = label_w + len(MODES) * panel_w + (len(MODES) - 1) * gap + 20
    height = top + row_h * len(plotted) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">multiproc vs the raw OS floor vs '
        f"Python multiprocessing / PyCSP</text>",
        f'<text x="10" y="36" fill="#444">Each bar: cost relative to the raw floor '
        f"(time, or 1/throughput), log scale; 1x = the floor, shorter is faster. "
        f"Labels: the measured figure.</text>",
    ]
    source = f"{path.name}: {header}"
    for n, start in enumerate(range(0, min(len(source), 340), 170)):
        out.append(
            f'<text x="10" y="{50 + 12 * n}" fill="#444" font-size="9">'
            f"{escape(source[start:start + 170])}</text>"
        )
    legend_y = 78
    x = 10
    for side in SIDES:
        out.append(f'<rect x="{x}" y="{legend_y}" width="12" height="8" fill="{COLOURS[side]}"/>')
        out.append(f'<text x="{x + 16}" y="{legend_y + 8}">{LABELS[side]}</text>')
        x += 110

    def xpos(panel_x, cost):
        frac = math.log10(cost / lo) / decades
        return panel_x + max(0.0, min(1.0, frac)) * (panel_w - 90)

    for i, mode in enumerate(MODES):
        px = label_w + i * (panel_w + gap)
        out.append(f'<text x="{px}" y="{top - 8}" font-weight="bold">{mode}</text>')
        for d in range(decades + 1):
            gx = px + d * (panel_w - 90) / decades
            tick = lo * 10**d
            text = f"{tick:g}x"
            colour = "#555" if abs(tick - 1) < 1e-12 else "#ddd"
            dash = ' stroke-dasharray="4 3"' if colour == "#555" else ""
            out.append(
                f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" '
                f'y2="{top + row_h * len(plotted)}" stroke="{colour}"{dash}/>'
            )
            out.append(
                f'<text x="{gx:.1f}" y="{top + row_h * len(plotted) + 14}" '
                f'text-anchor="middle" fill="#444">{text}</text>'
            )
    for j, row in enumerate(plotted):
        y = top + j * row_h
        unit = rows[row]["unit"]
        if j % 2:
            out.append(
                f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f4f4f4" opacity="0.6"/>'
            )
        out.append(f'<text x="10" y="{y + 18}">{escape(row)} ({escape(unit)})</text>')
        for i, mode in enumerate(MODES):
            px = label_w + i * (panel_w + gap)
            figures = rows[row].get(mode, {})
            if not figures:
                continue
            raw = figures.get("raw")
            for k, side in enumerate(SIDES):
                by = y + 4 + k * (bar_h + 1)
                if side not in figures or not raw:
                    if side == "python":
                        out.append(f'<text x="{px + 2}" y="{by + bar_h}" fill="#999" font-size="8">no Python figure</text>')
                    continue
                cost = relative_cost(figures[side], raw, unit)
                end = xpos(px, cost)
                out.append(
                    f'<rect x="{px}" y="{by}" width="{max(end - px, 1):.1f}" height="{bar_h}" '
                    f'fill="{COLOURS[side]}"><title>{escape(row)} {mode} {LABELS[side]}: '
                    f"{escape(human(figures[side], unit))} ({cost:.3g}x the floor)</title></rect>"
                )
                out.append(
                    f'<text x="{end + 3:.1f}" y="{by + bar_h}" font-size="8" fill="#333">'
                    f"{escape(human(figures[side], unit))}</text>"
                )
    out.append("</svg>")
    SVG_OUT.write_text("\n".join(out) + "\n")


def cell(figures, side, unit):
    return human(figures[side], unit) if side in figures else "–"


def full_table(path, rows, order):
    lines = [
        f"From `benches/results/{path.name}`"
        " (the figures are the run's medians; see the row list below for what each measures).",
        "",
        "| row | "
        + " | ".join(f"{mode}: multiproc | raw floor | Python" for mode in MODES)
        + " |",
        "|---" + "|--:" * (3 * len(MODES)) + "|",
    ]
    for row in order:
        unit = rows[row].get("unit", "")
        cells = [f"`{row}`"]
        for mode in MODES:
            figures = rows[row].get(mode, {})
            cells += [cell(figures, side, unit) for side in SIDES]
        lines.append("| " + " | ".join(cells) + " |")
    for peer, label in PEERS.items():
        with_peer = [r for r in order if any(peer in rows[r].get(m, {}) for m in MODES)]
        if not with_peer:
            continue
        lines += [
            "",
            f"Measured beside the crate in the same run: {label} (`{peer}`).",
            "",
            "| row | " + " | ".join(f"{mode}: multiproc | {label}" for mode in MODES) + " |",
            "|---" + "|--:" * (2 * len(MODES)) + "|",
        ]
        for row in with_peer:
            unit = rows[row].get("unit", "")
            cells = [f"`{row}`"]
            for mode in MODES:
                figures = rows[row].get(mode, {})
                cells += [cell(figures, "crate", unit), cell(figures, peer, unit)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(path, rows):
    lines = [
        f"Unpinned medians from `benches/results/{path.name}`;"
        " every row, the same-core and cross-core figures and the plot are in `benches/README.md`.",
        "",
        "| what | multiproc | raw OS floor | Python |",
        "|---|--:|--:|--:|",
    ]
    for row, what in SUMMARY:
        if row not in rows:
            continue
        unit = rows[row].get("unit", "")
        figures = rows[row].get("unpinned", {})
        lines.append(
            f"| {what} | {cell(figures, 'crate', unit)} | {cell(figures, 'raw', unit)}"
            f" | {cell(figures, 'python', unit)} |"
        )
    return "\n".join(lines)


def replace_between(readme, marker, text):
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    content = readme.read_text()
    if start not in content or end not in content:
        print(f"{readme}: no {start} ... {end} markers; table not written", file=sys.stderr)
        return
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else newest_run()
    header, rows, order = parse(path)
    if not order:
        sys.exit(f"{path}: no figures")
    svg(path, header, rows, order)
    replace_between(BENCH_README, "compare-table", full_table(path, rows, order))
    replace_between(MAIN_README, "compare-summary", summary_table(path, rows))
    print(f"{path.name} -> {SVG_OUT.relative_to(BENCHES.parent)}, tables in "
          f"{BENCH_README.relative_to(BENCHES.parent)} and {MAIN_README.name}")


if __name__ == "__main__":
    main()
