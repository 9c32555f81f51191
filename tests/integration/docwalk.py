"""Run the commands a Markdown page shows, verbatim, the way a newcomer would.

A page is read as a sequence of fenced blocks:

- a block with ``file=PATH`` (```` ```toml file=quote.toml ````) is written
  to PATH, relative to the page's working directory;
- every line of an ``sh`` block is a command, run with ``/bin/sh`` as typed.
  ``A && B`` runs A, then B. A command that starts with ``reactorkit run``
  is the server the page starts "in a terminal": it runs in the background
  until its ``serving N listener(s)`` log line, and the page's later
  commands are the ones typed "from another terminal". It is stopped with
  SIGINT (Ctrl-C) when the page ends or another server starts, and must
  exit 0;
- a ``text`` block right after an ``sh`` block is what the last command of
  that block prints (compared with line endings normalized and surrounding
  blank space stripped);
- any other block is an example to read, not to run.

Nothing here retypes a command: the test names the page (and, for a long
page, the sections) and everything else comes from the Markdown.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

FENCE = re.compile(r"^```(\w+)(?: file=(\S+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SERVING = re.compile(r"serving (\d+) listeners?\b")

#: Seconds for one command: pip may build and download; the rest is quick.
PIP_TIMEOUT = 600.0
COMMAND_TIMEOUT = 60.0
SERVER_START_TIMEOUT = 60.0


@attrs.frozen
class Block:
    """One fenced block: its language, its ``file=`` target (or None) and its text."""

    lang: str
    file: str | None
    body: str


@attrs.frozen
class Ran:
    """A command that ran, what it printed and how long it took."""

    command: str
    stdout: str
    stderr: str
    seconds: float


def long_test() -> None:
    """Turn off pytest's hang dump (faulthandler_timeout) for a test that is long, not hung.

    Every command it runs has its own timeout, so it cannot hang silently.
    """
    faulthandler.cancel_dump_traceback_later()


def blocks(markdown: str, *, sections: tuple[str, ...] | None = None) -> list[Block]:
    """The fenced blocks of a page, or only of the ``## `` sections named (in page order)."""
    if sections is not None:
        parts = re.split(r"^## ", markdown, flags=re.MULTILINE)
        chosen = [p for p in parts[1:] if p.split("\n", 1)[0].strip() in sections]
        missing = set(sections) - {p.split("\n", 1)[0].strip() for p in chosen}
        assert not missing, f"sections not found: {sorted(missing)}"
        markdown = "".join("## " + p for p in chosen)
    return [Block(m.group(1), m.group(2), m.group(3)) for m in FENCE.finditer(markdown)]


def clean_venv(root: Path) -> dict[str, str]:
    """A new virtualenv with nothing but pip; returns the environment of a shell in it.

    ``PATH`` starts with the venv's ``bin`` and keeps only system folders, so
    a command the docs forget to install (``pytest``) is not found in some
    other environment (the one running this suite, say).
    """
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    system = [
        p
        for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if p and not (Path(p).parent / "pyvenv.cfg").exists() and ".tox" not in Path(p).parts
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST", "COV_", "TOX_"))
    }
    env.update(
        PATH=os.pathsep.join([str(root / "bin"), *system]),
        VIRTUAL_ENV=str(root),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def copy_checkout(root: Path, dest: Path) -> Path:
    """The checkout as a newcomer clones it: sources only, none of our build or env folders."""
    shutil.copytree(
        root,
        dest,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".tox",
            "__pycache__",
            "*.egg-info",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
            ".hypothesis",
            "build",
            "dist",
        ),
    )
    return dest


@contextlib.contextmanager
def fixed_ports_lock(timeout: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide lock of tests that bind the ports the docs name.

    The docs use fixed ports (7007, 8080...) because a newcomer types them;
    tests otherwise bind port 0, which the kernel picks from the ephemeral
    range, so only two walks at once could collide, and this lock makes
    them take turns.
    """
    path = Path(tempfile.gettempdir()) / "reactorkit-doc-ports.lock"
    with open(path, "a+") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} held for over {timeout:.0f}s") from None
                time.sleep(0.5)  # no event to await: flock has no timeout
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Server:
    """A ``reactorkit run`` started by a page, its log read by a thread."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path) -> None:
        self.command = command
        # exec: the signal goes to reactorkit itself, not to a shell around it.
        self.proc = subprocess.Popen(
            f"exec {command}",
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self._lines.put(line)
        self._lines.put(None)

    def wait_serving(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"`{self.command}` did not start serving:\n{''.join(self.log)}"
                ) from None
            if line is None:
                raise AssertionError(f"`{self.command}` exited:\n{''.join(self.log)}")
            self.log.append(line)
            if SERVING.search(line):
                return

    def stop(self) -> None:
        """Ctrl-C, as the page says; the server must drain and exit 0."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self.kill()
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.log.append(line)
        assert code == 0, f"`{self.command}` exited {code} on SIGINT:\n{''.join(self.log)}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)  # it closes the pipe at EOF


class Walk:
    """One newcomer's shell: one environment, the commands it ran, the server it started."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ran: list[Ran] = []
        self.server: Server | None = None

    def page(self, page_blocks: list[Block], cwd: Path) -> None:
        """Do what the page says, in ``cwd``; then stop the server it started."""
        try:
            last: Ran | None = None
            previous: Block | None = None
            for block in page_blocks:
                if block.file is not None:
                    target = cwd / block.file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.body)
                elif block.lang == "sh":
                    last = None
                    for line in block.body.splitlines():
                        if line.strip() and not line.lstrip().startswith("#"):
                            for command in line.split(" && "):
                                last = self.command(command.strip(), cwd)
                elif block.lang == "text" and previous is not None and previous.lang == "sh":
                    assert last is not None, f"no command printed the output {block.body!r}"
                    got = last.stdout.replace("\r\n", "\n").strip()
                    assert got == block.body.strip(), (
                        f"`{last.command}` printed {got!r}, the page says {block.body.strip()!r}"
                    )
                previous = block
        finally:
            self.stop_server()

    def command(self, command: str, cwd: Path) -> Ran | None:
        """Run one command as typed; a ``reactorkit run`` starts the page's server."""
        if command.startswith("reactorkit run"):
            self.stop_server()
            self.server = Server(command, self.env, cwd)
            self.server.wait_serving()
            return None
        started = time.monotonic()
        result = subprocess.run(
            command,
            shell=True,
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT if command.startswith("pip ") else COMMAND_TIMEOUT,
        )
        server_log = "".join(self.server.log) if self.server is not None else ""
        assert result.returncode == 0, (
            f"`{command}` in {cwd} exited {result.returncode} after "
            f"{time.monotonic() - started:.1f}s:\n{result.stdout}\n{result.stderr}\n"
            f"server log:\n{server_log}"
        )
        ran = Ran(command, result.stdout, result.stderr, time.monotonic() - started)
        self.ran.append(ran)
        return ran

    def stop_server(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    def output(self, command: str) -> str:
        """What the last run of ``command`` printed."""
        for ran in reversed(self.ran):
            if ran.command == command:
                return ran.stdout
        raise AssertionError(f"`{command}` never ran; ran: {[r.command for r in self.ran]}")
