"""python -m build makes the sdist and, from it, the wheel; the wheel works in a clean venv."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import reactorkit
from tests.helpers import recv_until_closed
from tests.integration.docwalk import Server, Walk, blocks, clean_venv, copy_checkout, long_test

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_clean_venv_and_checks(tmp_path: Path) -> None:
    long_test()
    checkout = copy_checkout(ROOT, tmp_path / "reactorkit")
    dist = tmp_path / "dist"
    # Without arguments build makes the sdist, then the wheel from the sdist:
    # both are checked at once.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(checkout)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    version = reactorkit.__version__
    sdist = dist / f"reactorkit-{version}.tar.gz"
    wheel = dist / f"reactorkit-{version}-py3-none-any.whl"
    assert sorted(p.name for p in dist.iterdir()) == [wheel.name, sdist.name]
    # The name docs/operations.md's Dockerfile copies.
    assert f"dist/{wheel.name}" in (ROOT / "docs" / "operations.md").read_text()
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "reactorkit/client.py" in names
    assert "reactorkit/testing/pytest_plugin.py" in names
    assert not any(name.startswith(("tests/", "docs/")) for name in names)
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert f"reactorkit-{version}/docs/tutorial.md" in members

    env = clean_venv(tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "pip"), "install", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    checked = subprocess.run(
        [str(bin_dir / "reactorkit"), "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.endswith("<default config>: ok (4 listeners)\n")
    listed = subprocess.run(
        [str(bin_dir / "reactorkit"), "plugins", "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert re.search(rf"echo \(reactorkit\.handlers\.echo, reactorkit {version}\)", listed.stdout)


#: The image's folders the Dockerfile writes to; the test roots them in a temp dir.
IMAGE_DIRS = re.compile(r"(?<![\w./-])/(tmp|etc)/")


@pytest.mark.slow
def test_the_container_recipe_builds_installs_and_serves_from_a_checkout(tmp_path: Path) -> None:
    """docs/operations.md's build command and Dockerfile, without Docker (no daemon in CI).

    The build command runs verbatim in a fresh venv in a copy of the checkout;
    a second fresh venv stands in for ``python:3.11-slim``; ``COPY``, ``RUN``
    and ``CMD`` run as written, with the image's ``/tmp`` and ``/etc`` rooted
    in a test folder; ``STOPSIGNAL`` stops the server, which must exit 0.
    """
    long_test()
    page = blocks((ROOT / "docs" / "operations.md").read_text(), sections=("In a container",))
    build = [b for b in page if b.lang == "sh"]
    dockerfiles = [b.body for b in page if b.lang == "dockerfile"]
    assert len(build) == 1, page
    assert len(dockerfiles) == 1, page

    context = copy_checkout(ROOT, tmp_path / "reactorkit")
    Walk(clean_venv(tmp_path / "build-venv")).page(build, context)
    # The user's config, next to the Dockerfile; loopback and a free port in a test.
    (context / "reactorkit.toml").write_text(
        '[[listen]]\nhandler = "http-lite"\nhost = "127.0.0.1"\nport = 0\n'
    )

    image = tmp_path / "image"
    (image / "tmp").mkdir(parents=True)
    (image / "etc").mkdir()
    env = clean_venv(tmp_path / "image-venv")  # FROM python:3.11-slim: python and pip

    def rooted(text: str) -> str:
        return IMAGE_DIRS.sub(lambda m: f"{image}/{m.group(1)}/", text)

    instructions = re.sub(r"\\\n\s*", "", dockerfiles[0]).splitlines()
    stop_signal = signal.SIGTERM
    cmd: list[str] | None = None
    for line in instructions:
        word, _, rest = line.partition(" ")
        if word == "FROM":
            assert rest.startswith("python:3."), line
        elif word == "COPY":
            source, target = rest.split()
            destination = Path(rooted(target))
            if target.endswith("/"):
                destination = destination / Path(source).name
            shutil.copyfile(context / source, destination)
        elif word == "RUN":
            ran = subprocess.run(
                rooted(rest),
                shell=True,
                cwd=image,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert ran.returncode == 0, f"RUN {rest}\n{ran.stdout}\n{ran.stderr}"
        elif word == "STOPSIGNAL":
            stop_signal = signal.Signals[rest.strip()]
        elif word == "CMD":
            cmd = [rooted(arg) for arg in json.loads(rest)]
        else:
            assert word in {"EXPOSE", ""} or word.startswith("#"), line
    assert cmd is not None, "the Dockerfile has no CMD"
    assert not (image / "tmp" / "reactorkit-0.1.0-py3-none-any.whl").exists()

    server = Server(shlex.join(cmd), env, image)
    try:
        server.wait_serving()
        found = re.search(
            r"listening: \S+ handler=http-lite on 127\.0\.0\.1:(\d+)", "".join(server.log)
        )
        assert found, server.log
        port = int(found.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = recv_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert answer.split(b"\r\n\r\n", 1)[1].strip() == b"ok", answer
        server.proc.send_signal(stop_signal)
        assert server.proc.wait(timeout=30) == 0, "".join(server.log)
    finally:
        server.kill()
