"""Who a client is for the limits: an IPv4 address, an IPv6 client's /64."""

import pytest

from alloconv_gate.clients import client_key, network_key


@pytest.mark.parametrize(
    ("address", "client"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4-itself"),
        pytest.param("2001:db8:1:2::5", "2001:db8:1:2::/64", id="ipv6-its-64"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="ipv6-64-end"),
        pytest.param("2001:DB8:1:2::5", "2001:db8:1:2::/64", id="ipv6-any-case"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="ipv4-mapped"),
        pytest.param("fe80::1%eth0", "fe80::/64", id="zone-dropped"),
        pytest.param("2002:c000:0201::1", "192.0.2.1", id="6to4-its-ipv4"),
        pytest.param("64:ff9b::192.0.2.9", "192.0.2.9", id="nat64-its-ipv4"),
        pytest.param("", "-", id="none"),
        pytest.param("not-an-address", "not-an-address", id="junk-kept"),
    ],
)
def test_client_key(address, client):
    assert client_key(address) == client


def test_neighbouring_64s_are_two_clients():
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")


@pytest.mark.parametrize(
    ("address", "network"),
    [
        pytest.param("192.0.2.77", "192.0.2.0/24", id="ipv4-its-24"),
        pytest.param("2001:db8:1:2::5", "2001:db8:1::/48", id="ipv6-its-48"),
        pytest.param("2002:c000:02ff::1", "192.0.2.0/24", id="6to4-its-ipv4-24"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.0/24", id="mapped-its-ipv4-24"),
        pytest.param("not-an-address", "not-an-address", id="junk-its-own"),
    ],
)
def test_network_key(address, network):
    """What one owner usually holds: a 6to4 /48 is one IPv4 address's, not a network."""
    assert network_key(client_key(address)) == network
    assert network_key(address) == network
