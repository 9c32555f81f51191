"""Config errors for allow/deny, the PROXY keys and [listen.tls]: file, listener, field."""

from __future__ import annotations

import tomllib

import pytest

from reactorkit import Config, ConfigErrors

P = "r.toml"
HEAD = '[[listen]]\nhandler = "echo"\nport = 1\n'


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        Config.from_dict(tomllib.loads(HEAD + text), path=P)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'allow = ["10.0.0.1/8"]',
            "r.toml: listen[0] 'echo': allow must be a list of CIDRs: '10.0.0.1/8' is not an "
            "IP address or network: 10.0.0.1/8 has host bits set, got ['10.0.0.1/8']",
        ),
        ('deny = "10.0.0.0/8"', "r.toml: listen[0] 'echo': deny must be a list of CIDRs"),
        ('proxy_protocol = "v3"\nproxy_from = ["127.0.0.1"]', "proxy_protocol must be 'v1'"),
        (
            'proxy_protocol = "v1"',
            "r.toml: listen[0] 'echo': proxy_from is required with proxy_protocol: the "
            "addresses of the trusted proxies (e.g. proxy_from = ['127.0.0.1/32'] for a local "
            "HAProxy)",
        ),
        ('proxy_from = ["127.0.0.1"]', "proxy_from only makes sense with proxy_protocol"),
        (
            'proxy_protocol = "v2"\nproxy_from = ["::1"]\nproxy_timeout = 0',
            "proxy_timeout must be a number of seconds > 0, got 0",
        ),
        ('tls = "yes"', "r.toml: listen[0] 'echo': tls must be a table ([listen.tls]), got 'yes'"),
        ("[listen.tls]\nkey = 'k.pem'", "tls.cert is required: a PEM certificate file"),
        (
            "[listen.tls]\ncert = 'c.pem'\nclient_auth = 'required'",
            "tls.ca is required with client_auth",
        ),
        ("[listen.tls]\ncert = 'c.pem'\nhandshake_timeout = -1", "tls.handshake_timeout must be"),
        ("[listen.tls]\ncert = 'c.pem'\ncrt = 1", "tls.crt is not a known [listen.tls] key"),
    ],
)
def test_bad_edge_keys_are_reported_exactly(text: str, expected: str) -> None:
    found = errors(text)
    assert any(expected in line for line in found), found


def test_good_edge_keys_reach_the_listener_options() -> None:
    config = Config.from_dict(
        tomllib.loads(
            HEAD + 'allow = ["10.0.0.0/8", "::1"]\ndeny = ["10.9.0.0/16"]\n'
            'proxy_protocol = "any"\nproxy_from = ["127.0.0.1"]\nproxy_timeout = 2\n'
            "[listen.tls]\ncert = 'c.pem'\nkey = 'k.pem'\nalpn = ['http/1.1']\n"
            "min_version = '1.3'\n"
        ),
        path=P,
    )
    options = config.listeners[0].edge_options()
    assert options["allow"] == ("10.0.0.0/8", "::1")
    assert options["deny"] == ("10.9.0.0/16",)
    assert options["proxy_protocol"] == "any"
    assert options["proxy_timeout"] == 2.0
    tls = options["tls"]
    assert (tls.cert, tls.key, tls.alpn, tls.min_version) == (
        "c.pem",
        "k.pem",
        ("http/1.1",),
        "1.3",
    )
    assert tls.handshake_timeout == 10.0
