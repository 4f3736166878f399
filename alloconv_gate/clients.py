"""Who a client is, for the limits: an address as networks hand them out.

An IPv4 address names one line (or one NAT: a company, a mobile carrier's, a school's).
An IPv6 customer gets a whole /64 at least (RFC 6177; most providers give a /56 or a /48),
and picks addresses in it at will: counted by address, one visitor could send as many
codes as they have addresses, which is 2**64. So an IPv6 client is its /64, and an
IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, as a dual-stack socket reports IPv4
peers) is the IPv4 address it maps.
"""

from __future__ import annotations

import functools
import ipaddress

IPV6_CLIENT_PREFIX = 64


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the refusal
def client_key(address: str) -> str:
    """The client the rate limits and the verifications in flight count ``address`` as.

    Anything that is no IP address (a Unix socket's empty name, a proxy's junk) is kept as
    it is: the limits then count it as one client, which errs on the strict side.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: no zone
    except ValueError:
        return address or "-"
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    network = ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False)
    return str(network)
