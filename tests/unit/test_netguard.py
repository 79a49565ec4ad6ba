"""Unit tests for batchgate.netguard: what callback URLs are refused, and why. No network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from batchgate.netguard import AddressPolicy, Allowed, GuardedResolver

from resolvers import FakeResolver, refused

REFUSED = [
    # URL shape
    ("ftp://example.com/", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("//example.com/hook", "http or https"),
    ("/hook", "http or https"),
    ("http:///hook", "no host"),
    ("http://[::1/", "not a valid URL"),
    ("http://example.com\\@127.0.0.1/", "not a valid URL"),
    ("http://user:secret@example.com/", "credentials"),
    ("http://127.0.0.1:80@example.com/", "credentials"),
    # loopback
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://127.255.255.254:8080/", "is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    # private
    ("http://10.1.2.3/", "host 10.1.2.3 is a private address"),
    ("http://172.16.0.1/", "is a private address"),
    ("http://172.31.255.255/", "is a private address"),
    ("http://192.168.1.1/", "is a private address"),
    ("http://[fc00::1]/", "is a private address"),
    ("http://[fd12:3456::1]/", "is a private address"),
    ("http://[fec0::1]/", "private (site-local)"),
    # link-local, including the cloud metadata service
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/", "is a link-local address"),
    ("http://[fe80::1%25eth0]/", "fe80::1 is a link-local address"),
    # multicast, unspecified, this network, CGNAT, reserved, broadcast
    ("http://224.0.0.1/", "is a multicast address"),
    ("http://239.255.255.250/", "is a multicast address"),
    ("http://[ff02::1]/", "is a multicast address"),
    ("http://0.0.0.0/", "is the unspecified address"),
    ("http://[::]/", "is the unspecified address"),
    ("http://0.1.2.3/", "'this network'"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://240.0.0.1/", "is a reserved address"),
    ("http://255.255.255.255/", "is the broadcast address"),
    ("http://192.0.0.8/", "reserved (IETF protocol)"),
    ("http://192.88.99.1/", "reserved (6to4 relay)"),
    ("http://[100::1]/", "discard-only"),
    ("http://[2001:10::1]/", "non-public"),
    ("http://[4000::1]/", "non-public"),
    # documentation and benchmarking
    ("http://192.0.2.1/", "is a documentation address"),
    ("http://198.51.100.7/", "is a documentation address"),
    ("http://203.0.113.9/", "is a documentation address"),
    ("http://[2001:db8::1]/", "is a documentation address"),
    ("http://[3fff::1]/", "is a documentation address"),
    ("http://198.18.0.1/", "is a benchmarking address"),
    ("http://198.19.255.255/", "is a benchmarking address"),
    ("http://[2001:2::1]/", "is a benchmarking address"),
    # numeric host tricks, read as inet_aton/getaddrinfo read them
    ("http://2130706433/", "host 127.0.0.1 is a loopback address"),
    ("http://0x7f000001/", "host 127.0.0.1 is a loopback address"),
    ("http://0X7F000001/", "host 127.0.0.1 is a loopback address"),
    ("http://0177.0.0.1/", "host 127.0.0.1 is a loopback address"),
    ("http://017700000001/", "host 127.0.0.1 is a loopback address"),
    ("http://127.1/", "host 127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "host 127.0.0.1 is a loopback address"),
    ("http://10.0x10203/", "host 10.1.2.3 is a private address"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "host 169.254.169.254 is a link-local address"),
    ("http://0/", "host 0.0.0.0 is the unspecified address"),
    ("http://127.0.0.1./", "host 127.0.0.1 is a loopback address"),
    ("http://\u2460\u2461\u2466.0.0.1/", "host 127.0.0.1 is a loopback address"),  # circled digits, NFKC
    ("http://256.0.0.1/", "not a valid IPv4 address"),
    ("http://4294967296/", "not a valid IPv4 address"),
    ("http://08.0.0.1/", "not a valid IPv4 address"),
    ("http://1.2.3.4.5/", "not a valid IPv4 address"),
    ("http://example.123/", "not a valid IPv4 address"),
    ("http://%31%32%37.0.0.1/", "not a valid IPv4 address"),
    ("http://ex%41mple.com/", "not a valid hostname"),
    ("http://127.0.0.1%2f/", "not a valid hostname"),
    ("http://a..b/", "not a valid hostname"),
    # IPv6 that embeds IPv4 is judged by the IPv4 address
    ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1, which is a loopback address"),
    ("http://[::ffff:7f00:1]/", "embeds 127.0.0.1, which is a loopback address"),
    ("http://[::ffff:169.254.169.254]/", "embeds 169.254.169.254, which is a link-local address"),
    ("http://[::127.0.0.1]/", "embeds 127.0.0.1, which is a loopback address"),
    ("http://[::10.0.0.1]/", "embeds 10.0.0.1, which is a private address"),
    ("http://[64:ff9b::127.0.0.1]/", "embeds 127.0.0.1, which is a loopback address"),
    ("http://[64:ff9b::a00:1]/", "embeds 10.0.0.1, which is a private address"),
    ("http://[64:ff9b:1::a00:1]/", "embeds 10.0.0.1, which is a private address"),
    ("http://[64:ff9b:1:1::5db8:d822]/", "local-use NAT64"),
    ("http://[2002:7f00:1::1]/", "embeds 127.0.0.1, which is a loopback address"),
    ("http://[2002:a9fe:a9fe::]/", "embeds 169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "embeds 127.0.0.1"),  # Teredo client (bit-inverted)
    ("http://[2001:0:a00:1:8000:63bf:a247:27dd]/", "embeds 10.0.0.1"),  # Teredo server
    # localhost by name
    ("http://localhost/", "host localhost is a loopback name"),
    ("http://LOCALHOST:8080/", "host localhost is a loopback name"),
    ("http://localhost./", "host localhost is a loopback name"),
    ("http://api.localhost/", "host api.localhost is a loopback name"),
    ("http://\uff2c\uff2f\uff23\uff21\uff2c\uff28\uff2f\uff33\uff34/", "is a loopback name"),  # fullwidth
]

ACCEPTED = [
    ("http://93.184.216.34/", "93.184.216.34"),
    ("https://8.8.8.8:8443/hook", "8.8.8.8"),
    ("http://1.1.1.1/", "1.1.1.1"),
    ("http://100.128.0.1/", "100.128.0.1"),  # just above CGNAT
    ("http://172.32.0.1/", "172.32.0.1"),  # just above 172.16/12
    ("http://11.0.0.1/", "11.0.0.1"),
    ("http://0x5db8d822/", "93.184.216.34"),
    ("http://[2606:4700::1111]/", "2606:4700::1111"),
    ("https://[2001:4860:4860::8888]:443/x", "2001:4860:4860::8888"),
    ("http://[::ffff:93.184.216.34]/", "::ffff:5db8:d822"),
    ("http://[64:ff9b::93.184.216.34]/", "64:ff9b::5db8:d822"),
    ("http://[2002:5db8:d822::1]/", "2002:5db8:d822::1"),
    ("http://[2001:0:4136:e378:8000:63bf:a247:27dd]/", "2001:0:4136:e378:8000:63bf:a247:27dd"),
    ("https://example.com/callback?batch=1#frag", "example.com"),
    ("HTTPS://Hooks.Example.COM./cb", "hooks.example.com"),
    ("http://localhost.example.com/", "localhost.example.com"),
    ("http://my_host.example.com/", "my_host.example.com"),
    ("http://\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444/", "xn--e1afmkfd.xn--p1ai"),
    ("http://1password.com/", "1password.com"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_check_url_refuses_unsafe_url_with_reason(url: str, reason: str) -> None:
    with refused(reason):
        AddressPolicy().check_url(url)


@pytest.mark.parametrize(("url", "host"), ACCEPTED)
def test_check_url_accepts_public_url_and_returns_normalised_host(url: str, host: str) -> None:
    assert AddressPolicy().check_url(url) == host


def test_check_ip_refuses_scoped_link_local_address() -> None:
    with refused("link-local"):
        AddressPolicy().check_ip(ipaddress.ip_address("fe80::1%eth0"))


def test_check_ip_accepts_public_addresses() -> None:
    AddressPolicy().check_ip(ipaddress.ip_address("93.184.216.34"))
    AddressPolicy().check_ip(ipaddress.ip_address("2606:4700::1111"))


# --- from_spec -------------------------------------------------------------


def test_from_spec_parses_ips_hosts_and_cidrs() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1, Example.Internal., 10.0.0.0/8, ::1")
    assert policy.allowed == (
        Allowed(ipaddress.ip_network("127.0.0.1/32")),
        Allowed("example.internal"),
        Allowed(ipaddress.ip_network("10.0.0.0/8")),
        Allowed(ipaddress.ip_network("::1/128")),
    )


def test_from_spec_takes_ports_with_hosts_and_ips() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1:9000, hooks.internal:8443, [::1]:8080, ::1")
    assert policy.allowed == (
        Allowed(ipaddress.ip_network("127.0.0.1/32"), 9000),
        Allowed("hooks.internal", 8443),
        Allowed(ipaddress.ip_network("::1/128"), 8080),
        Allowed(ipaddress.ip_network("::1/128")),  # a bare IPv6 address: its colons are not a port
    )


def test_an_entry_with_a_port_admits_that_port_only() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1:9000, hooks.internal:8443")
    assert policy.check_url("http://127.0.0.1:9000/hook") == "127.0.0.1"
    assert policy.check_url("http://2130706433:9000/hook") == "127.0.0.1"
    with refused("host 127.0.0.1 is allowed on other ports than 9001"):
        policy.check_url("http://127.0.0.1:9001/hook")
    with refused("is a loopback address"):
        policy.check_url("http://127.0.0.2:9000/hook")
    assert policy.name_allowed("hooks.internal", 8443)
    assert not policy.name_allowed("hooks.internal", 443)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://2130706433:9000/hook", "http://127.0.0.1:9000/hook"),
        ("http://0x7f.1/hook#frag", "http://127.0.0.1/hook"),
        ("HTTPS://Hooks.Example.COM./x?a=1", "https://hooks.example.com./x?a=1"),
        ("http://[::ffff:7f00:1]/", "http://[::ffff:7f00:1]/"),
    ],
)
def test_a_callback_url_is_put_in_one_spelling_before_it_is_checked(url: str, canonical: str) -> None:
    assert AddressPolicy().canonical(url) == canonical


def test_from_spec_ignores_blank_entries() -> None:
    assert AddressPolicy.from_spec("") == AddressPolicy()
    assert AddressPolicy.from_spec(" , ,\t") == AddressPolicy()
    assert AddressPolicy.from_spec(",hooks.internal,,").allowed == (Allowed("hooks.internal"),)


def test_from_spec_normalises_brackets_idn_and_numeric_forms() -> None:
    policy = AddressPolicy.from_spec(
        "[fe80::1], \u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444, 127.1, 127.0.0.1"
    )
    assert policy.allowed == (
        Allowed(ipaddress.ip_network("fe80::1/128")),
        Allowed("xn--e1afmkfd.xn--p1ai"),
        Allowed(ipaddress.ip_network("127.0.0.1/32")),
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("::1/200", "not a valid CIDR"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("http://example.com/", "not a valid CIDR"),
        ("*.example.com", "not a host, IP address or CIDR"),
        ("bad host", "not a host, IP address or CIDR"),
        ("300.1.1.1", "not a valid IPv4 address"),
        ("127.0.0.1, ok.example, nope!", "'nope!'"),
    ],
)
def test_from_spec_rejects_bad_entry_with_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry") as excinfo:
        AddressPolicy.from_spec(spec)
    assert message in str(excinfo.value)


# --- allow list ------------------------------------------------------------


def test_allowed_ip_exempts_exactly_that_address() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1")
    assert policy.check_url("http://127.0.0.1:8080/hook") == "127.0.0.1"
    with refused("127.0.0.2 is a loopback"):
        policy.check_url("http://127.0.0.2/")
    with refused("10.0.0.1 is a private"):
        policy.check_url("http://10.0.0.1/")


def test_allowed_ip_also_exempts_its_numeric_and_embedded_forms() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1")
    assert policy.check_url("http://2130706433/") == "127.0.0.1"
    assert policy.check_url("http://[::ffff:127.0.0.1]/") == "::ffff:7f00:1"


def test_allowed_cidr_exempts_its_range_only() -> None:
    policy = AddressPolicy.from_spec("10.0.0.0/8, fd00::/8")
    assert policy.check_url("http://10.255.0.1/") == "10.255.0.1"
    assert policy.check_url("http://[fd00::5]/") == "fd00::5"
    with refused("private"):
        policy.check_url("http://172.16.0.1/")


def test_allowed_ipv6_loopback_exempts_ipv6_only() -> None:
    policy = AddressPolicy.from_spec("::1")
    assert policy.check_url("http://[::1]:9000/") == "::1"
    with refused("loopback"):
        policy.check_url("http://127.0.0.1/")


def test_allowed_localhost_name_exempts_that_name_only() -> None:
    policy = AddressPolicy.from_spec("localhost")
    assert policy.check_url("http://localhost:8080/") == "localhost"
    assert policy.check_url("http://LOCALHOST./") == "localhost"
    with refused("loopback name"):
        policy.check_url("http://api.localhost/")


def test_allow_list_does_not_excuse_bad_url_shape() -> None:
    policy = AddressPolicy.from_spec("127.0.0.1")
    with refused("http or https"):
        policy.check_url("ftp://127.0.0.1/")


# --- check_url_resolved ----------------------------------------------------


async def test_resolved_check_accepts_name_with_only_public_addresses() -> None:
    resolver = FakeResolver(["93.184.216.34", "2606:4700::1111"])
    await AddressPolicy().check_url_resolved("https://hooks.example.com/cb", resolver=resolver)
    assert resolver.calls == ["hooks.example.com"]


async def test_resolved_check_refuses_name_when_any_address_is_refused() -> None:
    resolver = FakeResolver(["93.184.216.34", "10.0.0.1"])
    with refused("host 10.0.0.1 is a private address"):
        await AddressPolicy().check_url_resolved("https://hooks.example.com/cb", resolver=resolver)


async def test_resolved_check_refuses_name_resolving_to_mapped_loopback() -> None:
    resolver = FakeResolver(["::ffff:127.0.0.1"])
    with refused("embeds 127.0.0.1"):
        await AddressPolicy().check_url_resolved("https://hooks.example.com/cb", resolver=resolver)


async def test_resolved_check_refuses_name_that_does_not_resolve() -> None:
    with refused("host nowhere.example does not resolve"):
        await AddressPolicy().check_url_resolved("http://nowhere.example/", resolver=FakeResolver([]))


async def test_resolved_check_skips_ip_checks_for_allowed_hostname() -> None:
    resolver = FakeResolver(["10.0.0.1"])
    await AddressPolicy.from_spec("hooks.internal").check_url_resolved(
        "http://hooks.internal/", resolver=resolver
    )
    assert resolver.calls == []


async def test_resolved_check_does_not_resolve_ip_literals() -> None:
    resolver = FakeResolver(["10.0.0.1"])
    await AddressPolicy().check_url_resolved("http://93.184.216.34/", resolver=resolver)
    assert resolver.calls == []


async def test_resolved_check_refuses_statically_before_resolving() -> None:
    resolver = FakeResolver(["93.184.216.34"])
    with refused("loopback name"):
        await AddressPolicy().check_url_resolved("http://localhost/", resolver=resolver)
    assert resolver.calls == []


async def test_resolved_check_defaults_to_loop_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []

    async def fake_getaddrinfo(host: str, port: Any, **kwargs: Any) -> list[Any]:
        seen.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    with refused("10.9.8.7 is a private address"):
        await AddressPolicy().check_url_resolved("http://hooks.example.com/")
    assert seen == ["hooks.example.com"]


async def test_resolved_check_reports_gaierror_as_unresolvable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing_getaddrinfo(host: str, port: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", failing_getaddrinfo)
    with refused("does not resolve"):
        await AddressPolicy().check_url_resolved("http://hooks.example.com/")


# --- GuardedResolver -------------------------------------------------------


async def test_guarded_resolver_passes_through_public_answers() -> None:
    resolver = GuardedResolver(AddressPolicy(), FakeResolver(["93.184.216.34"]))
    results = await resolver.resolve("hooks.example.com", 443)
    assert [(r["host"], r["port"]) for r in results] == [("93.184.216.34", 443)]


async def test_guarded_resolver_refuses_when_any_answer_is_refused() -> None:
    resolver = GuardedResolver(AddressPolicy(), FakeResolver(["93.184.216.34", "169.254.169.254"]))
    with refused("169.254.169.254 is a link-local address"):
        await resolver.resolve("hooks.example.com", 443)


async def test_guarded_resolver_trusts_allowed_hostname() -> None:
    policy = AddressPolicy.from_spec("hooks.internal")
    results = await GuardedResolver(policy, FakeResolver(["10.0.0.1"])).resolve("hooks.internal.", 80)
    assert [r["host"] for r in results] == ["10.0.0.1"]


async def test_guarded_resolver_applies_allowed_networks() -> None:
    policy = AddressPolicy.from_spec("10.0.0.0/8")
    results = await GuardedResolver(policy, FakeResolver(["10.0.0.1"])).resolve("hooks.example.com", 80)
    assert [r["host"] for r in results] == ["10.0.0.1"]
