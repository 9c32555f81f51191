"""SIGHUP with workers re-reads the TLS certificate files; a bad renewal keeps the old ones."""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT
from tests.integration.test_workers import (
    Supervised,
    supervised,  # noqa: F401  (a fixture)
    write_config,
)
from tests.tlscerts import Certs, make_certs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")


def install(certs: Certs, site: Path) -> None:
    """Copy ``certs``' server certificate and key to the paths the config names."""
    shutil.copyfile(certs.server_cert, site / "site.pem")
    shutil.copyfile(certs.server_key, site / "site.key")


def echo_once(certs: Certs, port: int) -> bytes:
    """One TLS echo round trip, trusting only ``certs``' CA."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"ping\n")
        return sock.recv(100)


def refused_by(certs: Certs, port: int) -> bool:
    """Whether a client trusting only ``certs``' CA rejects the server's certificate."""
    try:
        echo_once(certs, port)
    except ssl.SSLCertVerificationError:
        return True
    return False


def test_sighup_serves_renewed_certificates_and_a_bad_renewal_keeps_the_old(
    supervised, tmp_path: Path
) -> None:
    for name in ("old", "new", "site"):
        (tmp_path / name).mkdir()
    old, new = make_certs(tmp_path / "old"), make_certs(tmp_path / "new")
    site = tmp_path / "site"
    install(old, site)
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [reactor]
        workers = 2
        shutdown_timeout = 5
        [[listen]]
        name = "secure"
        handler = "echo"
        port = 0
        [listen.tls]
        cert = "{site / "site.pem"}"
        key = "{site / "site.key"}"
        """,
    )
    server: Supervised = supervised(config)
    server.wait_generation(1)
    port = server.port()
    assert echo_once(old, port) == b"ping\n"
    assert refused_by(new, port)

    # Renewed files on disk, then SIGHUP: the next generation serves them.
    install(new, site)
    server.signal(signal.SIGHUP)
    server.wait_generation(2)
    # Generation 2 serves once the old workers were told to stop accepting;
    # until they exit, one may still take a connection with the old files.
    for _ in range(2):
        server.wait_for(r"retired \(")
    assert echo_once(new, port) == b"ping\n"
    assert refused_by(old, port)

    # A renewal whose key does not match its certificate fails the reload;
    # the running workers keep serving the certificate they loaded.
    shutil.copyfile(old.server_key, site / "site.key")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed: the old workers keep serving the old config")
    assert echo_once(new, port) == b"ping\n"

    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "Traceback" not in "".join(server.log)
