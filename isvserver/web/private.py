"""What only operators read (/metrics, /openapi.json): answered to the networks of ISV_METRICS_ALLOW
(loopback by default) or to a bearer of ISV_METRICS_TOKEN; anyone else gets a 403."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from flask import Response, jsonify, request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


FORBIDDEN = "forbidden: only the networks of ISV_METRICS_ALLOW or a bearer of ISV_METRICS_TOKEN may read this"


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (CIDR); ValueError naming the first that is neither."""
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part[:64]!r} is not an address or network") from None
    return tuple(networks)


def in_networks(address: str | None, networks: Sequence[Network]) -> bool:
    """Whether `address` (an IPv4-mapped IPv6 address as its IPv4 one) is in one of `networks`."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token (compared in constant time)."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def only_operators() -> Response | None:
    """A before_request hook: None for an operator, else the 403 answer."""
    from isvserver.calls import source_address
    from isvserver.runtime import runtime

    settings = runtime().settings
    if bearer_matches(request.headers.get("Authorization"), settings.metrics_token):
        return None
    if in_networks(source_address(request, settings.forwarded_allow_ips), settings.metrics_allow):
        return None
    response = jsonify(error=FORBIDDEN, status=403)
    response.status_code = 403
    return response
