"""Certificates made at test time with trustme: a CA, a server cert, a client cert."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import attrs
import trustme


@attrs.frozen
class Certs:
    """PEM files in a temporary directory."""

    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str  # certificate and key in one file
    client_ca: str  # the CA that signed client_cert
    ca: trustme.CA

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_cert)
        if with_cert:
            context.load_cert_chain(self.client_cert)
        return context

    def tls_table(self, **extra: object) -> dict[str, object]:
        return {"cert": self.server_cert, "key": self.server_key, **extra}


def make_certs(directory: Path, *, not_after: datetime.datetime | None = None) -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", not_after=not_after)
    client_ca = trustme.CA()
    client = client_ca.issue_cert("alice.example.org", common_name="alice")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key", "client", "cca")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    client_ca.cert_pem.write_to_path(str(paths["cca"]))
    return Certs(
        ca_cert=str(paths["ca"]),
        server_cert=str(paths["cert"]),
        server_key=str(paths["key"]),
        client_cert=str(paths["client"]),
        client_ca=str(paths["cca"]),
        ca=ca,
    )
