"""AccessList and RefusalLog: CIDR matching, deny wins, UNIX peers, rate-limited logging."""

from __future__ import annotations

import logging

import pytest

from reactorkit.access import AccessList, RefusalLog, parse_networks, peer_ip


def acl(allow: list[str] = [], deny: list[str] = []) -> AccessList:  # noqa: B006
    return AccessList(parse_networks(allow), parse_networks(deny))


def test_empty_allow_admits_everything_not_denied() -> None:
    rules = acl(deny=["10.0.0.0/8"])
    assert rules.admits(("192.0.2.1", 5))
    assert not rules.admits(("10.1.2.3", 5))


def test_allow_list_refuses_the_rest() -> None:
    rules = acl(allow=["127.0.0.1", "2001:db8::/32"])
    assert rules.admits(("127.0.0.1", 1))
    assert not rules.admits(("127.0.0.2", 1))
    assert rules.admits(("2001:db8::5", 1, 0, 0))
    assert not rules.admits(("::1", 1, 0, 0))


def test_deny_wins_over_allow() -> None:
    rules = acl(allow=["10.0.0.0/8"], deny=["10.9.0.0/16"])
    assert rules.admits(("10.1.0.1", 1))
    assert not rules.admits(("10.9.0.1", 1))


def test_ipv4_mapped_ipv6_matches_the_ipv4_rules() -> None:
    rules = acl(allow=["192.0.2.0/24"])
    assert rules.admits(("::ffff:192.0.2.7", 1, 0, 0))
    assert not acl(deny=["192.0.2.0/24"]).admits(("::ffff:192.0.2.7", 1, 0, 0))


def test_scoped_ipv6_address_is_matched_without_its_zone() -> None:
    assert peer_ip(("fe80::1%eth0", 1, 0, 2)) is not None
    assert acl(deny=["fe80::/10"]).admits(("fe80::1%eth0", 1, 0, 2)) is False


@pytest.mark.parametrize("peer", ["", "/run/x.sock", b"", None])
def test_unix_peers_are_exempt(peer: object) -> None:
    assert acl(allow=["10.0.0.0/8"], deny=["0.0.0.0/0"]).admits(peer)


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "nonsense", "10.0.0.0/33", 7])
def test_parse_networks_rejects_bad_entries(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad) if isinstance(bad, str) else "7"):
        parse_networks([bad])


def test_refusal_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.refusals")
    refusals = RefusalLog(logger, interval=10.0)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        refusals.refused(100.0, "refused %s", "a")
        for i in range(5):
            refusals.refused(101.0 + i, "refused %s", "b")
        refusals.refused(111.0, "refused %s", "c")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a", "refused c (5 more refused in the last 10s, not logged)"]


def test_ipv4_mapped_entries_are_the_ipv4_networks_they_name() -> None:
    assert [str(n) for n in parse_networks(["::ffff:10.0.0.0/104", "::ffff:1.2.3.4", "::1"])] == [
        "10.0.0.0/8",
        "1.2.3.4/32",
        "::1/128",
    ]
    assert not AccessList(deny=parse_networks(["::ffff:10.0.0.1"])).admits(("::ffff:10.0.0.1", 1))
    assert not AccessList(deny=parse_networks(["::ffff:10.0.0.1"])).admits(("10.0.0.1", 1))
