"""Where a teacher URL chosen by a request may go: public addresses only, checked after resolving the name.

A request-chosen URL (allowed only with ``EMOTUNE_DATAGEN_TEACHER_ALLOW_REQUEST_URL``) must not reach the
datagen process's own neighbourhood: loopback, private networks, link-local (169.254.169.254, the cloud
metadata service), unspecified, multicast or reserved addresses. The name is checked at submission
(:func:`check_request_url`, for a clear error) and again on every connection (:class:`PublicOnlyResolver`), so
a name that resolves elsewhere later (DNS rebinding) still goes nowhere private. Redirects are not followed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from emotune.errors import InvalidInput

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: str) -> str | None:
    """Why ``address`` (an IP literal) is no place for a request-chosen teacher, or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address carried inside IPv6 is judged as that address
        embedded = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            return refusal(str(embedded))
    for what in ("loopback", "unspecified", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{what}"):
            return f"{ip} is a {what.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"base_url must be an http(s) URL with a host, got {url!r}", field="teacher.base_url")
    if parts.username or parts.password:
        raise InvalidInput("base_url must not carry credentials", field="teacher.base_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"base_url has an invalid port: {url!r}", field="teacher.base_url") from None
    return parts.hostname, port


def check_request_url(url: str) -> None:
    """Resolve ``url``'s host and refuse it unless every address it has is public (blocking: DNS)."""
    host, port = _host_port(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"teacher host {host!r} does not resolve ({exc})", field="teacher.base_url") from None
    for info in infos:
        reason = refusal(str(info[4][0]))
        if reason:
            raise InvalidInput(f"teacher host {host!r} is refused: {reason}; a request-chosen teacher URL must "
                               "be a public address", field="teacher.base_url")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's threaded resolver, refusing any name with a non-public address (aiohttp skips resolvers for
    IP literals: those are checked by :func:`check_request_url` before a session exists)."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = refusal(result["host"])
            if reason:
                raise OSError(errno.EACCES, f"refused: {reason}")  # aiohttp shows the strerror
        return results

    async def close(self) -> None:
        await self._inner.close()
