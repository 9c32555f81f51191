"""bench/report.py: per-round ratios, floor deltas and tables; charts.py: the SVG (matplotlib)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # bench/ is scripts, not a package
    import report

    return report


def section(report: ModuleType) -> object:
    """Three rounds of a small fixed comparison, with drift: round 3 is twice as slow for all."""
    s = report.Section(
        name="echo",
        title="Echo",
        metric="cpu_us",
        metric_label="CPU µs/request",
        floor="C floor",
        baselines=["asyncio", "uvloop"],
        columns=[("rps", "requests/s")],
    )
    cpu = {"C floor": [2.0, 2.2, 4.0], "reactorkit": [5.0, 5.5, 10.0], "asyncio": [6.0, 6.0, 12.0]}
    cpu["uvloop"] = [5.0, 5.0, 10.0]
    for round_ in range(3):
        for server, values in cpu.items():
            s.add("50 conns", server, {"cpu_us": values[round_], "rps": 1000.0 * (round_ + 1)})
    return s


def test_ratios_are_taken_round_by_round(report: ModuleType) -> None:
    s = section(report)
    assert s.ratios("50 conns", "reactorkit", "uvloop") == [1.0, 1.1, 1.0]
    assert s.ratios("50 conns", "reactorkit", "asyncio") == pytest.approx([5 / 6, 5.5 / 6, 10 / 12])


def test_cost_above_the_floor_is_taken_round_by_round(report: ModuleType) -> None:
    s = section(report)
    assert s.above_floor("50 conns", "reactorkit") == pytest.approx([3.0, 3.3, 6.0])


def test_spread_shows_the_median_and_the_range(report: ModuleType) -> None:
    assert report.spread([3.0, 1.0, 2.0], "{:.1f}") == "2.0 (1.0-3.0)"
    assert report.spread([1.0, 1.0], "{:.2f}", "x") == "1.00x"
    assert report.spread([-0.5, 2.0, 1.0], "{:+.1f}") == "+1.0 (-0.5 to 2.0)"
    assert report.spread([float("nan")], "{:.1f}") == "n/a"


def test_markdown_table_has_a_row_per_server_with_floor_and_ratio_columns(
    report: ModuleType,
) -> None:
    table = report.markdown(section(report)).splitlines()
    assert table[0] == "### Echo"
    assert table[2] == (
        "| load | server | requests/s | CPU µs/request, median (min-max) | above the C floor "
        "| vs asyncio | vs uvloop |"
    )
    rows = {line.split(" | ")[1]: line for line in table[4:]}
    assert list(rows) == ["C floor", "reactorkit", "asyncio", "uvloop"]
    assert rows["reactorkit"] == (
        "| 50 conns | reactorkit | 2,000 | 5.5 (5.0-10.0) | +3.3 (3.0 to 6.0) "
        "| 0.83x (0.83-0.92) | 1.00x (1.00-1.10) |"
    )
    assert rows["C floor"].split(" | ")[4] == "-"
    assert rows["uvloop"].endswith("| 1.00x |")


def test_saved_results_load_back_to_the_same_table(report: ModuleType, tmp_path: Path) -> None:
    original = section(report)
    path = original.save(tmp_path, {"command": "python bench/run.py echo", "seed": 7})
    [(header, loaded)] = report.load([path])
    assert header["seed"] == 7
    assert report.markdown(loaded) == report.markdown(original)


def test_chart_is_a_valid_svg_with_a_bar_per_server_and_no_date(
    report: ModuleType, tmp_path: Path
) -> None:
    import charts

    s = section(report)
    first = charts.write_svg(s, tmp_path / "a.svg")
    second = charts.write_svg(s, tmp_path / "b.svg")
    text = first.read_text()
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    for name in ("C floor", "reactorkit", "asyncio", "uvloop", "50 conns", "Echo"):
        assert f">{name}<" in text  # svg.fonttype = 'none': labels stay text
    assert "<dc:date>" not in text
    assert first.read_bytes() == second.read_bytes()  # re-runs diff only where numbers moved
