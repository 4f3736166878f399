"""Who a client is for the limits: an IPv4 address, an IPv6 client's /64."""

import pytest

from alloconv_gate.clients import client_key


@pytest.mark.parametrize(
    ("address", "client"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4-itself"),
        pytest.param("2001:db8:1:2::5", "2001:db8:1:2::/64", id="ipv6-its-64"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="ipv6-64-end"),
        pytest.param("2001:DB8:1:2::5", "2001:db8:1:2::/64", id="ipv6-any-case"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="ipv4-mapped"),
        pytest.param("fe80::1%eth0", "fe80::/64", id="zone-dropped"),
        pytest.param("", "-", id="none"),
        pytest.param("not-an-address", "not-an-address", id="junk-kept"),
    ],
)
def test_client_key(address, client):
    assert client_key(address) == client


def test_neighbouring_64s_are_two_clients():
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
