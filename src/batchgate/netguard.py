"""Address guard for client-supplied callback URLs (SSRF protection).

A client tells batchgate where to POST its results, so without a guard a client
could make the gateway call the cloud metadata service (169.254.169.254), an
admin port on localhost or any machine on the private network. Callbacks may
reach public addresses only, plus whatever the operator puts on the allow list
(``AddressPolicy.from_spec("127.0.0.1, hooks.internal, 10.0.0.0/8")``).

The check runs twice, because DNS answers can change between the two:

1. At submit time, ``check_url`` (static, no DNS) and ``check_url_resolved``
   (also resolves the name) refuse a bad callbackUrl early, so the client gets a
   clear error instead of a batch whose callback silently fails later.
2. At connect time, ``guarded_connector`` gives aiohttp a ``GuardedResolver``
   that checks every address a hostname resolves to and hands aiohttp exactly
   the checked addresses to dial. An attacker's DNS server that answers a public
   address at submit time and 127.0.0.1 at delivery time (DNS rebinding) is
   therefore still refused. The refusal surfaces from ``session.post(...)`` as
   ``UnsafeAddress`` itself (not an ``aiohttp.ClientError``): it is permanent,
   retrying will not help.

aiohttp does NOT call the resolver for IP-literal hosts (``http://10.0.0.1/``,
``http://[::1]/``), so the resolver covers hostnames only. Callers must also
run ``check_url`` before every delivery attempt, and should send with
``allow_redirects=False`` (a redirect to an IP literal would bypass the
resolver). Do not combine the guarded connector with an HTTP proxy
(``proxy=``/``trust_env=True``): the resolver would then check the proxy's
address, not the callback's.

Decisions:

* Only absolute ``http``/``https`` URLs; any port is allowed.
* Userinfo (``user:pass@``) is refused: credentials would end up stored and
  logged with the URL, and ``@`` is the classic tool for confusing URL parsers.
* ``localhost`` and ``*.localhost`` are refused by name (RFC 6761), even before
  resolving, unless the exact name is allow-listed.
* Hosts are taken from yarl, the parser aiohttp itself dials with, and numeric
  hosts are read the way ``inet_aton``/``getaddrinfo`` read them
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` are 127.0.0.1).
  A host whose last label is a number but is not a valid address is refused.
* IPv6 addresses that embed an IPv4 address (mapped, compatible, NAT64, 6to4,
  Teredo) are judged by the embedded address(es); an allow-listed IPv4 address
  is therefore also allowed in its embedded forms. In the local-use NAT64
  prefix 64:ff9b:1::/48 only the /96 layout (IPv4 in the last 32 bits) is
  understood; other addresses there are refused.
* An allow-listed hostname is trusted whatever it resolves to.
* Test seams: ``check_url_resolved(url, resolver=...)`` and
  ``guarded_connector(policy, inner=...)`` take any aiohttp ``AbstractResolver``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from batchgate.protocol.errors import BatchgateError

__all__ = ["AddressPolicy", "GuardedResolver", "UnsafeAddress", "guarded_connector"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeAddress(BatchgateError):
    """The URL or the address it resolves to may not be called."""


def _nets(*specs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in specs)


# First match wins, so narrow ranges come before the ranges containing them.
# Written out instead of trusting ipaddress.is_global/is_private alone: their
# tables changed between Python releases (e.g. 3.11.10, 3.12.4, 3.13).
_REFUSED_IPV4 = _nets(
    ("0.0.0.0/32", "the unspecified address"),
    ("0.0.0.0/8", "a 'this network' address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a reserved (IETF protocol) address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a reserved (6to4 relay) address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_REFUSED_IPV6 = _nets(
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001:2::/48", "a benchmarking address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a private address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a private (site-local) address"),
    ("ff00::/8", "a multicast address"),
)
# IPv6 ranges whose last 32 bits are an IPv4 address: IPv4-compatible (::a.b.c.d),
# well-known NAT64 and the /96 layout of local-use NAT64.
_EMBEDS_LAST_32 = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "64:ff9b::/96", "64:ff9b:1::/96"))

# A host ending in a number is an IPv4 address, or invalid (the WHATWG URL rule).
_ENDS_IN_NUMBER = re.compile(r"(?:.*\.)?(?:[0-9]+|0x[0-9a-f]*)")
# One inet_aton part: hex, octal (leading 0) or decimal.
_INET_ATON_PART = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """Read host as inet_aton does: 1-4 parts, the last one fills the remaining bytes."""
    parts = host.split(".")
    if len(parts) > 4 or not all(_INET_ATON_PART.fullmatch(part) for part in parts):
        return None
    values = [_inet_aton_int(part) for part in parts]
    *head, last = values
    if any(value > 0xFF for value in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    packed = last
    for index, value in enumerate(head):
        packed |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(packed)


def _inet_aton_int(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)  # glibc reads a bare "0x" as zero; refusing it is the safe side
    if part.startswith("0"):
        return int(part, 8)
    return int(part)


def _parse_host(raw_host: str) -> IPAddress | str:
    """Classify a URL host (as yarl's raw_host gives it): an IP address or a normalised hostname."""
    host = raw_host.lower()
    if ":" in host:  # only IPv6 literals contain ':'; yarl has removed the brackets
        address, _, _zone = host.partition("%")  # the zone id (%25eth0) does not change what is reached
        try:
            return ipaddress.IPv6Address(address)
        except ValueError:
            raise UnsafeAddress(f"host {raw_host} is not a valid IPv6 address") from None
    host = host.removesuffix(".")  # "localhost." is "localhost"
    if _ENDS_IN_NUMBER.fullmatch(host):
        ipv4 = _parse_inet_aton(host)
        if ipv4 is None:
            raise UnsafeAddress(f"host {raw_host} is not a valid IPv4 address")
        return ipv4
    if not _HOSTNAME.fullmatch(host):
        raise UnsafeAddress(f"host {raw_host} is not a valid hostname")
    return host


def _parsed_url(url: str) -> URL:
    """The URL as aiohttp would dial it, once its shape is checked."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise UnsafeAddress(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeAddress("URL must be absolute http or https")
    if not parsed.raw_host:
        raise UnsafeAddress("URL has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeAddress("URL must not contain credentials (user:password@)")
    return parsed


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address really leads to, if it embeds any."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client); ipaddress already un-inverts the client bits
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    # :: and ::1 sit inside ::/96 but are IPv6's own unspecified and loopback addresses.
    if int(ip) > 1 and any(ip in net for net in _EMBEDS_LAST_32):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def _category(ip: IPAddress) -> str | None:
    """Why ip is not public ("a private address"), or None if it is."""
    table = _REFUSED_IPV4 if ip.version == 4 else _REFUSED_IPV6
    for network, label in table:
        if ip in network:
            return label
    if ip.is_reserved or not ip.is_global:  # anything our table missed, e.g. ORCHID, unassigned IPv6
        return "a non-public address"
    return None


def _without_zone(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


_PORT_SUFFIX = re.compile(r"(.*):([0-9]+)")


def _spec_entry(entry: str) -> Allowed:
    """One allow-list entry: a CIDR, an IP address (a /32 or /128) or a hostname, each with an
    optional port (`host:port`, `1.2.3.4:port`, `[v6]:port`); without one, any port."""
    if "/" in entry:
        try:
            return Allowed(ipaddress.ip_network(entry))  # strict: "10.0.0.1/8" is a typo worth reporting
        except ValueError as exc:
            raise ValueError(f"allow-list entry {entry!r} is not a valid CIDR: {exc}") from None
    host, port = entry, None
    with_port = _PORT_SUFFIX.fullmatch(entry)
    if with_port and (entry.startswith("[") or entry.count(":") == 1):  # a bare IPv6 has many colons
        host, port = with_port.group(1), int(with_port.group(2))
        if not 0 < port < 65536:
            raise ValueError(f"allow-list entry {entry!r} has no valid port")
    try:
        # yarl gives names the same IDNA/lower-case form the URLs will have.
        parsed = _parse_host(URL.build(scheme="http", host=host.strip("[]")).raw_host or "")
    except (UnsafeAddress, ValueError) as exc:
        raise ValueError(f"allow-list entry {entry!r} is not a host, IP address or CIDR: {exc}") from None
    target = parsed if isinstance(parsed, str) else ipaddress.ip_network(_without_zone(parsed))
    return Allowed(target, port)


@dataclass(frozen=True)
class Allowed:
    """An allow-list entry: a network or an exact hostname, on one port or on any (None)."""

    target: IPNetwork | str
    port: int | None = None

    def admits(self, host: IPAddress | str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if isinstance(self.target, str):
            return self.target == host
        return not isinstance(host, str) and host in self.target


@dataclass(frozen=True)
class AddressPolicy:
    """What callbacks may reach; everything public is allowed, the operator's allow list exempts more."""

    allowed: tuple[Allowed, ...] = ()

    @classmethod
    def from_spec(cls, spec: str) -> AddressPolicy:
        """Parse "127.0.0.1:9000, hooks.internal, 10.0.0.0/8, [::1]:8080"; blanks are ignored."""
        entries = (_spec_entry(part.strip()) for part in spec.split(",") if part.strip())
        return cls(allowed=tuple(dict.fromkeys(entries)))

    def canonical(self, url: str) -> str:
        """The URL as it will be called: its host in one spelling (an IPv4 address in any of its
        numeric forms as dotted quads, a name in lower case and IDNA), no fragment. What is checked
        at submit is then exactly what is dialled later."""
        parsed = _parsed_url(url)
        host = _parse_host(parsed.raw_host or "")
        canonical = parsed.with_fragment(None)
        if not isinstance(host, str):
            canonical = canonical.with_host(str(host))
        return str(canonical)

    def check_ip(self, ip: IPAddress, port: int | None = None) -> None:
        """Raise UnsafeAddress unless ip is public, or allow-listed (on `port`, when given)."""
        reason = self._refusal(_without_zone(ip), port)
        if reason is not None:
            raise UnsafeAddress(f"host {ip} {reason}")

    def _refusal(self, ip: IPAddress, port: int | None) -> str | None:
        if any(entry.admits(ip, port) for entry in self.allowed):
            return None
        embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
        if embedded:  # judged only by the IPv4 addresses it leads to
            refusals = ((ipv4, self._refusal(ipv4, port)) for ipv4 in embedded)
            return next((f"embeds {ipv4}, which {why}" for ipv4, why in refusals if why), None)
        category = _category(ip)
        if category is None:
            return None
        if any(not isinstance(entry.target, str) and ip in entry.target for entry in self.allowed):
            return f"is allowed on other ports than {port}"
        return f"is {category}"

    def check_url(self, url: str) -> str:
        """Static check (no DNS); returns the URL's normalised host (IP string or lower-case name)."""
        return str(self._check_static(url)[0])

    def _check_static(self, url: str) -> tuple[IPAddress | str, int | None]:
        parsed = _parsed_url(url)
        host = _parse_host(parsed.raw_host or "")
        if isinstance(host, str):
            self._check_name(host, parsed.port)
        else:
            self.check_ip(host, parsed.port)
        return host, parsed.port

    def _check_name(self, name: str, port: int | None) -> None:
        if self.name_allowed(name, port):
            return
        if name == "localhost" or name.endswith(".localhost"):
            raise UnsafeAddress(f"host {name} is a loopback name")

    def name_allowed(self, host: str, port: int | None) -> bool:
        """Whether a hostname is allow-listed (on `port`): then it is trusted wherever it points."""
        name = host.lower().removesuffix(".")
        return any(entry.admits(name, port) for entry in self.allowed)

    async def check_url_resolved(self, url: str, *, resolver: AbstractResolver | None = None) -> None:
        """check_url, then refuse if ANY address the hostname resolves to is refused.

        resolver defaults to aiohttp's ThreadedResolver (the running loop's getaddrinfo);
        tests pass a fake one.
        """
        host, port = self._check_static(url)
        if not isinstance(host, str) or self.name_allowed(host, port):
            return
        for ip in await _resolve_all(resolver or aiohttp.ThreadedResolver(), host, 0):
            self.check_ip(ip, port)


async def _resolve_all(resolver: AbstractResolver, host: str, port: int) -> list[IPAddress]:
    """Every address host resolves to; UnsafeAddress if there is none."""
    try:
        results = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
    except (OSError, UnicodeError):  # gaierror; UnicodeError for names the IDNA codec rejects
        results = []
    if not results:
        raise UnsafeAddress(f"host {host} does not resolve")
    return [_resolved_ip(result) for result in results]


def _resolved_ip(result: ResolveResult) -> IPAddress:
    try:
        return ipaddress.ip_address(result["host"])
    except ValueError:
        raise UnsafeAddress(f"host {result['hostname']} resolved to {result['host']!r}") from None


class GuardedResolver(AbstractResolver):
    """Resolves once through an inner resolver and drops the connection when any address is refused.

    aiohttp dials exactly the addresses returned here, so what is dialled is what was
    checked (DNS rebinding cannot slip through).
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._policy.name_allowed(host, port):  # an allow-listed name is trusted wherever it points
            for result in results:
                self._policy.check_ip(_resolved_ip(result), port)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(
    policy: AddressPolicy, *, inner: AbstractResolver | None = None, **connector_kwargs: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector whose hostname lookups go through GuardedResolver(policy, inner)."""
    return aiohttp.TCPConnector(resolver=GuardedResolver(policy, inner), **connector_kwargs)
