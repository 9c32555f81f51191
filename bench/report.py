"""Results of interleaved rounds, as Markdown tables (and, through charts.py, SVGs).

    python bench/report.py docs/perf/*.json [--charts DIR]

prints the tables of saved results again and redraws their charts, without
running anything. bench/run.py saves one JSON file per comparison.

A :class:`Section` holds, for every load row and server, one sample per
round: every round ran each server once, so sample ``i`` of two servers was
taken close together in time. Ratios are therefore taken round by round
(server ÷ baseline within round ``i``) and summarized by their median and
min-max; so is the cost above the floor (server minus floor within a round).
No process, socket or timer here: data in, text out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Sample = dict[str, float]


class Section:
    """One comparison: its rows, servers and per-round samples, and how to show them.

    Args:
        name: file stem of its JSON and SVG (``echo``).
        title: the table's and the chart's heading.
        metric: the sample key compared (``cpu_us``, ``bytes_per_conn``).
        metric_label: what the metric is, with its unit, for headers and axes.
        floor: the server whose figure is the physical floor, or None.
        baselines: servers every other one is compared to, as ratios.
        columns: extra (key, header) columns shown as medians before the metric.
        runs: ``runs[row][server]`` is the list of samples, one per round.
        note: one line printed under the table (what the rows mean).
    """

    def __init__(
        self,
        *,
        name: str,
        title: str,
        metric: str,
        metric_label: str,
        floor: str | None,
        baselines: Sequence[str],
        columns: Sequence[tuple[str, str]] = (),
        runs: dict[str, dict[str, list[Sample]]] | None = None,
        note: str = "",
    ) -> None:
        self.name = name
        self.title = title
        self.metric = metric
        self.metric_label = metric_label
        self.floor = floor
        self.baselines = list(baselines)
        self.columns = list(columns)
        self.runs: dict[str, dict[str, list[Sample]]] = runs if runs is not None else {}
        self.note = note

    def add(self, row: str, server: str, sample: Sample) -> None:
        self.runs.setdefault(row, {}).setdefault(server, []).append(sample)

    @property
    def rows(self) -> list[str]:
        return list(self.runs)

    def servers(self, row: str) -> list[str]:
        return list(self.runs[row])

    def values(self, row: str, server: str) -> list[float]:
        return [s[self.metric] for s in self.runs[row][server]]

    def per_round(
        self, row: str, server: str, other: str, op: Callable[[float, float], float]
    ) -> list[float]:
        """``op(server, other)`` round by round, over the rounds both have."""
        mine, theirs = self.values(row, server), self.values(row, other)
        return [op(a, b) for a, b in zip(mine, theirs, strict=False)]

    def ratios(self, row: str, server: str, base: str) -> list[float]:
        return self.per_round(row, server, base, lambda a, b: a / b if b else math.nan)

    def above_floor(self, row: str, server: str) -> list[float]:
        assert self.floor is not None
        return self.per_round(row, server, self.floor, lambda a, b: a - b)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "metric": self.metric,
            "metric_label": self.metric_label,
            "floor": self.floor,
            "baselines": self.baselines,
            "columns": self.columns,
            "note": self.note,
            "runs": self.runs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Section:
        return cls(
            name=data["name"],
            title=data["title"],
            metric=data["metric"],
            metric_label=data["metric_label"],
            floor=data["floor"],
            baselines=data["baselines"],
            columns=[tuple(c) for c in data["columns"]],
            runs=data["runs"],
            note=data.get("note", ""),
        )

    def save(self, directory: Path, header: dict[str, Any]) -> Path:
        """Write ``DIRECTORY/NAME.json`` (with ``header``: command, seed, ...); returns its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps({**header, **self.to_json()}, indent=1) + "\n")
        return path


def spread(values: Sequence[float], fmt: str, unit: str = "") -> str:
    """``median (min-max)`` of ``values``; just the median when all are equal.

    Ranges of signed values read "(-0.3 to 5.9)"; ``unit`` follows the median.
    """
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    med = fmt.format(statistics.median(finite)) + unit
    low, high = fmt.format(min(finite)), fmt.format(max(finite))
    if low == high:
        return med
    if "+" in fmt:
        low, high = (v.lstrip("+") for v in (low, high))
        return f"{med} ({low} to {high})"
    return f"{med} ({low}-{high})"


def _fmt_for(values: Sequence[float]) -> str:
    """One decimal below 1,000 (µs), none above (bytes)."""
    finite = [abs(v) for v in values if not math.isnan(v)]
    return "{:,.1f}" if finite and max(finite) < 1000 else "{:,.0f}"


def markdown(section: Section) -> str:
    """The section's table: medians with min-max, above-floor and per-round ratios."""
    fmt = _fmt_for(
        [v for row in section.rows for s in section.servers(row) for v in section.values(row, s)]
    )
    signed = fmt.replace("{:", "{:+")
    head = ["load", "server", *(label for _, label in section.columns)]
    head.append(f"{section.metric_label}, median (min-max)")
    if section.floor:
        head.append(f"above the {section.floor}")
    head += [f"vs {base}" for base in section.baselines]
    lines = [f"### {section.title}", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|---|" + "---:|" * (len(head) - 2))
    for row in section.rows:
        for server in section.servers(row):
            samples = section.runs[row][server]
            cells = [row, server]
            for key, _ in section.columns:
                cells.append(_column(key, [s[key] for s in samples if key in s]))
            cells.append(spread(section.values(row, server), fmt))
            if section.floor:
                if server == section.floor or section.floor not in section.runs[row]:
                    cells.append("-")
                else:
                    cells.append(spread(section.above_floor(row, server), signed))
            for base in section.baselines:
                if base in section.runs[row]:
                    cells.append(spread(section.ratios(row, server, base), "{:.2f}", "x"))
                else:
                    cells.append("n/a")
            lines.append("| " + " | ".join(cells) + " |")
    if section.note:
        lines += ["", section.note]
    return "\n".join(lines) + "\n"


def _column(key: str, values: list[float]) -> str:
    if not values:
        return "n/a"
    value = statistics.median(values)
    if key.endswith("_pct"):
        return f"{value:.0f}%"
    return f"{value:,.0f}"


def load(paths: Sequence[Path]) -> list[tuple[dict[str, Any], Section]]:
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        out.append((data, Section.from_json(data)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", type=Path, help="JSON files bench/run.py saved")
    parser.add_argument("--charts", type=Path, metavar="DIR", help="redraw the SVGs into DIR")
    args = parser.parse_args()
    for header, section in load(args.results):
        if "command" in header:
            print(f"`{header['command']}` (seed {header.get('seed')}), {header.get('date', '')}\n")
        print(markdown(section))
        if args.charts:
            import charts

            print(f"chart: {charts.write_svg(section, args.charts / f'{section.name}.svg')}\n")


if __name__ == "__main__":
    main()
