"""Startup time of `reactorkit plugins` with 20 installed dummy plugins, vs none.

    python bench/plugins_startup.py [--runs N] [--count N]
    python bench/plugins_startup.py --write DIR   # only write the plugins, to time with
                                                  # another tool (PYTHONPATH=DIR)

Writes 20 small distributions (a module plus a .dist-info with a
`reactorkit` entry point, as pip would install them) into a temporary
directory, then times `python -m reactorkit plugins` with that directory on
PYTHONPATH and without it, alternating, and prints the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = """
import reactorkit

class Handler{n}(reactorkit.Handler):
    pass

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="dummy-{n}", handler=Handler{n},
                                   description="dummy plugin {n}")]
"""


def make_plugins(root: Path, count: int) -> None:
    for n in range(count):
        (root / f"rk_dummy_{n}.py").write_text(PLUGIN.format(n=n))
        info = root / f"rk_dummy_{n}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: rk-dummy-{n}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[reactorkit]\ndummy-{n} = rk_dummy_{n}\n")


def time_once(env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "reactorkit", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    assert "Handler types:" in result.stdout
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--write", metavar="DIR", help="write the plugins into DIR and exit")
    args = parser.parse_args()
    if args.write:
        Path(args.write).mkdir(parents=True, exist_ok=True)
        make_plugins(Path(args.write), args.count)
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_plugins(Path(tmp), args.count)
        base = dict(os.environ)
        base.pop("PYTHONPATH", None)
        with_plugins = dict(base, PYTHONPATH=tmp)
        out = subprocess.run(
            [sys.executable, "-m", "reactorkit", "plugins"],
            env=with_plugins,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.count("dummy-") >= args.count, "the dummy plugins were not discovered"
        time_once(base)
        time_once(with_plugins)  # warm-up
        none, many = [], []
        for _ in range(args.runs):
            none.append(time_once(base))
            many.append(time_once(with_plugins))
    print(f"reactorkit plugins, median of {args.runs} runs:")
    print(f"  installed plugins as shipped: {statistics.median(none) * 1000:.0f} ms")
    print(f"  plus {args.count} dummy plugins:   {statistics.median(many) * 1000:.0f} ms")
    ratio = statistics.median(m / n for m, n in zip(many, none, strict=True))
    print(f"  ratio (pairwise median):      {ratio:.2f}x")


if __name__ == "__main__":
    main()
