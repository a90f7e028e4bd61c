"""The IPVS source of the exporter on the text the kernel prints (/proc/net/ip_vs and
ip_vs_stats), labelled by the model: per service and carrier, per server below the bound."""

from __future__ import annotations

import os

import pytest

import dcnet
from dcnet.cli.elbctl_metrics import ipvs_table
from dcnet.metrics.cardinality import Bound
from dcnet.metrics.elb import ELBCollector
from dcnet.model import load_model
from tests.unit.metrics_text import scrape as expose
from tests.unit.metrics_text import value

pytestmark = pytest.mark.unit
EXAMPLE = os.path.join(os.path.dirname(dcnet.__file__), "examples", "elb.yaml")

# the example model's first service: 198.51.100.10 (telecom) and 203.0.113.10 (bgp), :80
PROC = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  C633640A:0050 wrr
  -> 0A000115:1F90      Masq    7      3          1
  -> 0A000116:1F90      Masq    0      0          2
TCP  CB00710A:0050 wrr
  -> 0A000115:1F90      Masq    7      5          0
FWM  00000007 rr
  -> 0A000117:0050      Route   1      9          9
"""
STATS = """   Total Incoming Outgoing         Incoming         Outgoing
   Conns  Packets  Packets            Bytes            Bytes
      1F      3E8      3E9             FA00             FA01

 Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
       0        0        0                0                0
"""


def scrape(bound: Bound) -> str:
    model = load_model(EXAMPLE)
    table = ipvs_table(PROC, STATS)
    return expose(ELBCollector(model=lambda: model, ipvs_tables=lambda: {"host": table},
                               bound=bound))


def test_rows_and_totals_from_the_kernel_text():
    table = ipvs_table(PROC, STATS)
    assert [(r.vip, r.port, r.server, r.active, r.inactive, r.weight) for r in table.rows] == [
        ("198.51.100.10", 80, "10.0.1.21:8080", 3, 1, 7),
        ("198.51.100.10", 80, "10.0.1.22:8080", 0, 2, 0),
        ("203.0.113.10", 80, "10.0.1.21:8080", 5, 0, 7)]
    assert table.totals == {"connections": 31, "packets_in": 1000, "packets_out": 1001,
                            "bytes_in": 64000, "bytes_out": 64001}


def test_series_per_service_and_carrier_and_healthy_servers_per_vip():
    text = scrape(Bound(10))
    job = load_model(EXAMPLE).services[0].name
    assert value(text, "dcnet_ipvs_service_connections", carrier="telecom", netns="host",
                 port="80", service=job, state="active") == 3
    assert value(text, "dcnet_elb_vip_healthy_servers", carrier="telecom", port="80",
                 service=job, target="lvs") == 1       # the weight-0 server does not count
    assert value(text, "dcnet_elb_vip_healthy_servers", carrier="bgp", port="80",
                 service=job, target="lvs") == 1
    assert value(text, "dcnet_ipvs_total", counter="bytes_in", netns="host") == 64000
    assert 'server="10.0.1.22:8080"' in text


def test_above_the_bound_no_server_label():
    text = scrape(Bound(2))
    assert "server=" not in text
    assert value(text, "dcnet_metrics_server_rows", source="ipvs") == 3
