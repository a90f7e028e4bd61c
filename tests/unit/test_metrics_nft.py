"""The nft source of the exporter on nft's own JSON (``nft -j list counters``, nft 1.0.6):
per service, port, protocol and carrier, labelled by the model; a failing source."""

from __future__ import annotations

import json
import os

import pytest

import dcnet
from dcnet.metrics.elb import ELBCollector
from dcnet.model import load_model
from dcnet.nft.nftio import parse_counters
from tests.unit.metrics_text import samples, value
from tests.unit.metrics_text import scrape as expose

pytestmark = pytest.mark.unit
EXAMPLE = os.path.join(os.path.dirname(dcnet.__file__), "examples", "elb.yaml")
SERVICE = ("job.ocean-monitor-job_service.ocean-monitor-job_cluster.production-ig_pdl."
           "ocean_owt.inf_cop.xiaomi")


def counter(name: str, packets: int, octets: int, handle: int) -> dict:
    return {"counter": {"family": "inet", "name": name, "table": "dcnet", "handle": handle,
                        "packets": packets, "bytes": octets}}


# as nft 1.0.6 prints it: the example's first service on telecom (198.51.100.10:80), an
# IPv6 VIP the model does not have, and a counter some operator added by hand
LISTING = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                  "json_schema_version": 1}},
    counter("cn-tcp-198.51.100.10-80", 3, 180, 7),
    counter("ci-tcp-198.51.100.10-80", 30, 2400, 8),
    counter("co-tcp-198.51.100.10-80", 25, 9000, 9),
    counter("ci-udp-2001_db8__53-53", 4, 320, 10),
    counter("mine", 1, 1, 11)]})


def test_the_counters_listing_parses_per_vip_port():
    rows = parse_counters(LISTING)
    assert rows == {("tcp", "198.51.100.10", 80): {"conns": (3, 180), "in": (30, 2400),
                                                   "out": (25, 9000)},
                    ("udp", "2001:db8::53", 53): {"in": (4, 320)}}
    assert parse_counters('{"nftables": []}') == {}


def test_series_are_labelled_by_service_carrier_and_direction():
    model = load_model(EXAMPLE)
    text = expose(ELBCollector(model=lambda: model,
                               nft_counters=lambda: parse_counters(LISTING)))
    on = {"service": SERVICE, "port": "80", "protocol": "tcp", "carrier": "telecom"}
    assert value(text, "dcnet_nft_service_connections_total", **on) == 3
    assert value(text, "dcnet_nft_service_packets_total", direction="in", **on) == 30
    assert value(text, "dcnet_nft_service_bytes_total", direction="in", **on) == 2400
    assert value(text, "dcnet_nft_service_packets_total", direction="out", **on) == 25
    assert value(text, "dcnet_nft_service_bytes_total", direction="out", **on) == 9000
    # a VIP the model does not know: its address as the service, no carrier
    assert value(text, "dcnet_nft_service_packets_total", service="2001:db8::53", port="53",
                 protocol="udp", carrier="", direction="in") == 4
    assert value(text, "dcnet_exporter_source_up", source="nft") == 1
    nft_series = [k for k in samples(text) if k[0].startswith("dcnet_nft_")]
    assert len(nft_series) == 1 + 4 + 2          # nothing per client or real server


def test_a_failing_nft_source_is_reported_and_hides_nothing_else():
    def broken():
        raise OSError("nft: no such namespace")

    model = load_model(EXAMPLE)
    text = expose(ELBCollector(model=lambda: model, nft_counters=broken))
    assert value(text, "dcnet_exporter_source_up", source="nft") == 0
    assert value(text, "dcnet_service_info", service=SERVICE, carriers="telecom,unicom,"
                 "mobile,bgp", tag_job="ocean-monitor-job", tag_jobgroup="",
                 tag_service="ocean-monitor-job", tag_servicegroup="",
                 tag_cluster="production-ig", tag_pdl="ocean", tag_owt="inf",
                 tag_cop="xiaomi") == 1
    assert not [k for k in samples(text) if k[0].startswith("dcnet_nft_")]
