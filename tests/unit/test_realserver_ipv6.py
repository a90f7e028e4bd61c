"""``elbctl render realserver`` for IPv6 DR/TUN real servers (pure): VIPs on lo as /128,
no IPv4 ARP sysctls for an IPv6-only server, the proxy_ndp check, a next hop per family."""

from __future__ import annotations

import pytest
import yaml

from dcnet.lvs.realserver import RealServerError, render_all
from dcnet.model import parse_model

pytestmark = pytest.mark.unit

JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"


def model_text(vips: str = "{telecom: '2001:db8:1::10', unicom: '2001:db8:2::10'}",
               forward: str = "dr", servers: str = "['2001:db8:20::11', '2001:db8:20::12']") -> str:
    rs = ", ".join(f"{{address: '{a}'}}" for a in yaml.safe_load(servers))
    return f"""version: 1
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 198.51.100.1, gateway6: '2001:db8:1::1', table: 101,
     vip_ranges: [198.51.100.0/26, '2001:db8:1::/64']}}
  - {{name: unicom, uplink: cuc0, gateway: 198.51.100.65, gateway6: '2001:db8:2::1',
     table: 102,
     vip_ranges: [198.51.100.64/26, '2001:db8:2::/64'], default: true}}
services:
  - job: {JOB}
    vips: {vips}
    ports: [{{port: 80, scheduler: wrr, forward: {forward}}}]
    real_servers: [{rs}]
"""


def model(**kw):
    return parse_model(model_text(**kw), source="rs6.yaml")


def test_ipv6_dr_server_gets_its_vips_on_lo_as_128_and_no_arp_sysctls():
    text = render_all(model())
    section = text.split("# real server 2001:db8:20::11")[1].split("# real server")[0]
    assert "ip -6 addr replace 2001:db8:1::10/128 dev lo nodad" in section
    assert "ip -6 addr replace 2001:db8:2::10/128 dev lo nodad" in section
    assert "ip -6 route replace default via 2001:db8:1::1 table 101 proto" in section
    assert "ip -6 route replace default via 2001:db8:2::1 table 102 proto" in section
    assert "ip -6 rule add from 2001:db8:1::10 lookup 101 priority" in section
    assert "arp_ignore=1" not in section                 # IPv6 only: nothing to ignore
    assert "net.ipv6.conf.all.proxy_ndp" in section       # checked, not changed
    assert "proxy_ndp=" not in section
    assert "tunl0" not in section and "ip6tnl0" not in section


def test_the_carrier_gateway6_is_the_default_and_via_overrides_it_per_family():
    assert "ip -6 route replace default via 2001:db8:1::1 table 101" in render_all(model())
    text = render_all(model(), vias=("telecom=2001:db8:1::fe", "telecom=10.20.0.1"))
    assert "ip -6 route replace default via 2001:db8:1::fe table 101" in text
    assert "10.20.0.1" not in text                       # no IPv4 VIP: no IPv4 table route
    with pytest.raises(RealServerError, match="not an IP address"):
        render_all(model(), vias=("telecom=2001:db8::zz",))


def test_one_carrier_table_gets_a_default_route_per_family():
    vips = ("{telecom: [198.51.100.10, '2001:db8:1::10'], "
            "unicom: [198.51.100.70, '2001:db8:2::10']}")
    both = "['2001:db8:20::12', '10.20.0.12']"
    text = render_all(model(vips=vips, forward="tun", servers=both),
                      servers=("2001:db8:20::12",), vias=("telecom=10.20.0.1",))
    assert text.count("# real server") == 1
    assert "ip route replace default via 10.20.0.1 table 101 proto" in text
    assert "ip -6 route replace default via 2001:db8:1::1 table 101 proto" in text
    assert "ip addr replace 198.51.100.10/32 dev tunl0\n" in text
    assert "ip -6 addr replace 2001:db8:1::10/128 dev lo nodad" in text
    assert "net.ipv4.conf.all.arp_ignore=1" in text       # it has IPv4 VIPs too
    assert "ip link set tunl0 up" in text and "ip link set ip6tnl0 up" in text


def test_dr_pairs_a_server_only_with_vips_of_its_own_family():
    vips = ("{telecom: [198.51.100.10, '2001:db8:1::10'], "
            "unicom: [198.51.100.70, '2001:db8:2::10']}")
    text = render_all(model(vips=vips, servers="['2001:db8:20::12', '10.20.0.12']"))
    v6 = text.split("# real server 2001:db8:20::12")[1]
    v4 = text.split("# real server 10.20.0.12")[1].split("# real server")[0]
    assert "198.51.100" not in v6 and "arp_ignore=1" not in v6
    assert "2001:db8" not in v4 and "arp_ignore=1" in v4


def test_ipv6_tun_server_brings_up_ip6tnl0_and_keeps_the_vip_on_lo():
    text = render_all(model(forward="tun"))
    assert "ip link set ip6tnl0 up" in text
    assert "ip -6 addr replace 2001:db8:1::10/128 dev lo nodad" in text
    assert "tunl0 up" not in text


def test_nat_only_ipv6_servers_get_no_section():
    text = render_all(model(forward="nat"))
    assert "# real server" not in text
