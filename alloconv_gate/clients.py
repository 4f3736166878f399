"""Who a client is, for the limits: an address as networks hand them out.

An IPv4 address names one line (or one NAT: a company, a mobile carrier's, a school's).
An IPv6 customer gets a whole /64 at least (RFC 6177; most providers give a /56 or a /48),
and picks addresses in it at will: counted by address, one visitor could send as many
codes as they have addresses, which is 2**64. So an IPv6 client is its /64, and an IPv6
address that carries an IPv4 one (IPv4-mapped ``::ffff:192.0.2.1``, as a dual-stack socket
reports IPv4 peers; 6to4 ``2002:c000:0201::/48``, which gives every IPv4 address a /48 of
its own; NAT64 ``64:ff9b::192.0.2.1``) is the IPv4 address it carries.

A client's *network* is what one owner usually holds: an IPv4 /24, an IPv6 /48. It bounds
what many clients of one owner may take together (verifications waiting for AlloConv,
crawler lookups), since whoever has one /64 often has a /48 of them.
"""

from __future__ import annotations

import functools
import ipaddress

IPV6_CLIENT_PREFIX = 64
IPV4_NETWORK_PREFIX = 24
IPV6_NETWORK_PREFIX = 48
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the refusal
def client_key(address: str) -> str:
    """The client the rate limits and the verifications in flight count ``address`` as.

    Anything that is no IP address (a Unix socket's empty name, a proxy's junk) is kept as
    it is: the limits then count it as one client, which errs on the strict side.
    """
    ip = _ip(address)
    if ip is None:
        return address or "-"
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))


@functools.lru_cache(maxsize=4096)
def network_key(client: str) -> str:
    """The network of a client (as :func:`client_key` names it, or an address): its IPv4
    /24 or IPv6 /48; anything else is its own network."""
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        ip = _ip(client)
        if ip is None:
            return client
        network = ipaddress.ip_network(ip)
    if network.version == 6 and network.prefixlen == 128:
        ip = _ip(str(network.network_address))
        if ip is not None and ip.version == 4:  # it carries an IPv4 address
            network = ipaddress.ip_network(ip)
    prefix = IPV4_NETWORK_PREFIX if network.version == 4 else IPV6_NETWORK_PREFIX
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP address, the IPv4 address an IPv6 one carries as that IPv4
    address; None when it is none."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: no zone
    except ValueError:
        return None
    if ip.version == 4:
        return ip
    carried = ip.ipv4_mapped or ip.sixtofour
    if carried is None and ip in _NAT64:
        carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return carried or ip
