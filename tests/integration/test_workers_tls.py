"""``workers = N``: SIGHUP serves renewed TLS certificates; a broken one keeps the old workers."""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest

from tests.integration.test_workers import (
    TIMEOUT,
    Supervised,
    supervised,  # noqa: F401  (a fixture)
    write_config,
)
from tests.tlscerts import Certs, make_certs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")


def two_sets(tmp_path: Path) -> tuple[Certs, Certs]:
    """Two certificates for localhost from two CAs: the one served first, its renewal."""
    sets = []
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        sets.append(make_certs(tmp_path / name))
    return sets[0], sets[1]


def install(certs: Certs, live: Path) -> None:
    """Copy a certificate and its key where the config points, as a renewal does."""
    shutil.copyfile(certs.server_cert, live / "cert.pem")
    shutil.copyfile(certs.server_key, live / "key.pem")


def tls_config(path: Path, live: Path, workers: int = 2) -> str:
    return write_config(
        path,
        f"""
        [reactor]
        workers = {workers}
        shutdown_timeout = 5
        [[listen]]
        handler = "echo"
        port = 0
        [listen.tls]
        cert = "{live / "cert.pem"}"
        key = "{live / "key.pem"}"
        """,
    )


def echo_over_tls(certs: Certs, port: int) -> bytes:
    """One TLS echo round trip, verifying the server against ``certs``' CA."""
    context = certs.client_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with raw, context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"hello\n")
        return sock.recv(64)


def wait_stopped_accepting(server: Supervised, pids: list[int]) -> None:
    """Wait until each old worker logged its retirement: it accepts no more after that.

    Until then an old worker may still accept (and serve with the old
    certificate) a connection made after the new generation is serving.
    """
    for pid in pids:
        pattern = rf"\[{pid}\] reactorkit\.worker: worker \d retiring"
        if not any(re.search(pattern, line) for line in server.log):
            server.wait_for(pattern)


def served_by_every_worker(certs: Certs, port: int, count: int = 20) -> None:
    # Connections spread over both workers' sockets: each one must verify.
    for _ in range(count):
        assert echo_over_tls(certs, port) == b"hello\n"


def test_sighup_serves_renewed_certificates_and_keeps_them_through_a_broken_renewal(
    supervised, tmp_path
) -> None:
    old, new = two_sets(tmp_path)
    live = tmp_path / "live"
    live.mkdir()
    install(old, live)
    server = supervised(tls_config(tmp_path / "c.toml", live))
    first = server.wait_generation(1)
    port = server.port()
    served_by_every_worker(old, port)
    install(new, live)
    server.signal(signal.SIGHUP)
    server.wait_generation(2)
    wait_stopped_accepting(server, first)
    served_by_every_worker(new, port)
    with pytest.raises(ssl.SSLCertVerificationError):
        echo_over_tls(old, port)  # the old certificate is served no more
    # A renewal gone wrong (the old key with the new certificate) is refused
    # by the supervisor's checks; the workers serve on with what they have.
    shutil.copyfile(old.server_key, live / "key.pem")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed: .*tls")
    server.wait_for(r"reload failed: the old workers keep serving")
    served_by_every_worker(new, port)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_sighup_with_one_worker_is_ignored_and_the_certificate_stays(supervised, tmp_path) -> None:
    old, new = two_sets(tmp_path)
    live = tmp_path / "live"
    live.mkdir()
    install(old, live)
    server = supervised(tls_config(tmp_path / "c.toml", live, workers=1))
    _, listening = server.wait_for(r"listening: .* handler=echo on 127\.0\.0\.1:(\d+)")
    port = int(listening.group(1))
    assert echo_over_tls(old, port) == b"hello\n"  # the loop runs: SIGHUP is handled
    install(new, live)
    server.signal(signal.SIGHUP)
    server.wait_for(r"SIGHUP: this process has no supervisor")
    assert echo_over_tls(old, port) == b"hello\n"  # a restart (or workers >= 2) renews
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
