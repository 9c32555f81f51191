"""One SVG bar chart per comparison: the C floor, each peer and reactorkit, per load row.

Bars are the median over the rounds, whiskers the min-max. Written with
matplotlib's Agg backend, text kept as text (``svg.fonttype = 'none'``), a
fixed ``svg.hashsalt`` and no date or creator metadata, so the same results
give byte-identical files and a re-run diffs only where numbers moved.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from report import Section

#: Fixed colours by kind of server, so every chart reads alike.
FLOOR_COLOR = "#9e9e9e"
REACTORKIT_COLOR = "#d62728"
REACTORKIT_BEFORE_COLOR = "#f4a6a6"  # the same code, an older checkout (--before)
PEER_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def _colors(servers: list[str], floor: str | None) -> dict[str, str]:
    colors, peers = {}, iter(PEER_COLORS)
    for name in servers:
        if name == floor:
            colors[name] = FLOOR_COLOR
        elif name.startswith("reactorkit"):
            before = name.endswith(" before")
            colors[name] = REACTORKIT_BEFORE_COLOR if before else REACTORKIT_COLOR
        else:
            colors[name] = next(peers, "#7f7f7f")
    return colors


def write_svg(section: Section, path: Path) -> Path:
    """Draw ``section`` as grouped bars (one group per load row) into ``path``; returns it."""
    plt.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "reactorkit-bench", "font.size": 9}
    )
    servers: list[str] = []
    for row in section.rows:
        servers += [s for s in section.servers(row) if s not in servers]
    colors = _colors(servers, section.floor)
    rows = section.rows
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 3.5), 3.6))
    for i, server in enumerate(servers):
        xs, medians, low, high = [], [], [], []
        for x, row in enumerate(rows):
            if server not in section.runs[row]:
                continue
            values = [v for v in section.values(row, server) if not math.isnan(v)]
            if not values:
                continue
            med = statistics.median(values)
            xs.append(x - 0.4 + width * (i + 0.5))
            medians.append(med)
            low.append(med - min(values))
            high.append(max(values) - med)
        ax.bar(xs, medians, width, label=server, color=colors[server])
        ax.errorbar(
            xs, medians, yerr=[low, high], fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5
        )
    ax.set_xticks(
        range(len(rows)),
        rows,
        rotation=0 if len(rows) < 4 else 20,
        ha="center" if len(rows) < 4 else "right",
    )
    ax.set_ylabel(f"{section.metric_label} (lower is better)")
    ax.set_title(section.title)
    ax.set_axisbelow(True)
    ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path
