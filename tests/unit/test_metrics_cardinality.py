"""The cardinality switch: per-server series up to the bound, per-service aggregates
always, and the ELB collector honouring both."""

from __future__ import annotations

import pytest

from dcnet.metrics.cardinality import Bound, aggregate
from dcnet.metrics.elb import ELBCollector, IPVSRow, IPVSTable
from dcnet.metrics.haproxy_stat import BACKENDS_ONLY, parse_show_stat
from tests.unit.metrics_text import scrape, value

pytestmark = pytest.mark.unit

HEADER = "# pxname,svname,scur,stot,bin,bout,status,weight,act,type,addr,"
JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"


def show_stat(servers_per_backend: int, backends: int = 2) -> str:
    """HAProxy's answer to ``show stat`` (``BACKENDS_ONLY``: backend rows alone)."""
    lines = [HEADER, "stats,FRONTEND,1,5,0,0,OPEN,,,0,,"]
    for b in range(backends):
        name = f"{JOB}{b}:80"
        lines.append(f"{name},BACKEND,3,30,100,200,UP,{servers_per_backend},"
                     f"{servers_per_backend - 1},1,,")
        for s in range(servers_per_backend):
            state = "DOWN" if s == 0 else "UP"
            lines.append(f"{name},s{s + 1},1,10,5,5,{state},1,1,2,10.0.{b}.{s + 1}:8080,")
        lines.append(f"{name},s{servers_per_backend + 1},0,0,0,0,MAINT,1,0,2,0.0.0.0:0,")
    return "\n".join(lines) + "\n"


def haproxy(servers_per_backend: int, asked: list | None = None):
    def answer(which: str) -> str:
        if asked is not None:
            asked.append(which)
        text = show_stat(servers_per_backend)
        if which == BACKENDS_ONLY:
            text = "\n".join(line for line in text.split("\n")
                             if line.count(",") < 9 or line.split(",")[9] != "2")
        return text
    return answer


def test_auto_mode_switches_at_the_bound():
    bound = Bound(max_server_series=10)
    assert bound.per_server(10) and not bound.per_server(11)
    assert Bound(0, "server").per_server(10**6)
    assert not Bound(10**6, "service").per_server(1)
    with pytest.raises(ValueError):
        Bound(10, "client")


def test_aggregate_sums_per_key_in_first_seen_order():
    rows = [("a", 1), ("b", 2), ("a", 3)]
    assert aggregate(rows, lambda r: r[0], lambda r: {"n": r[1], "rows": 1}) == \
        {"a": {"n": 4, "rows": 2}, "b": {"n": 2, "rows": 1}}


def test_show_stat_parse_skips_free_slots_and_foreign_proxies():
    stats = parse_show_stat(show_stat(3, backends=1))
    assert [(s.server, s.state) for s in stats.servers] == \
        [("10.0.0.1:8080", "down"), ("10.0.0.2:8080", "up"), ("10.0.0.3:8080", "up")]
    assert [(b.service, b.port, b.sessions) for b in stats.backends] == [(f"{JOB}0", "80", 3)]


def test_collector_below_the_bound_exposes_servers_and_aggregates():
    text = scrape(ELBCollector(haproxy_stat=haproxy(3), bound=Bound(6)))
    assert "dcnet_haproxy_server_up{" in text
    assert value(text, "dcnet_haproxy_backend_servers", port="80", service=f"{JOB}0",
                 state="up") == 2
    assert value(text, "dcnet_metrics_per_server_series_enabled", source="haproxy") == 1
    assert value(text, "dcnet_elb_vip_healthy_servers", target="haproxy", port="80",
                 service=f"{JOB}0", carrier="") == 2


def test_collector_above_the_bound_keeps_only_per_service_series():
    text = scrape(ELBCollector(haproxy_stat=haproxy(4), bound=Bound(6)))
    assert "dcnet_haproxy_server_up{" not in text
    assert "dcnet_haproxy_server_sessions{" not in text
    assert value(text, "dcnet_haproxy_backend_servers", port="80", service=f"{JOB}1",
                 state="down") == 1
    assert value(text, "dcnet_metrics_per_server_series_enabled", source="haproxy") == 0
    assert value(text, "dcnet_metrics_server_rows", source="haproxy") == 8


def test_above_the_bound_by_the_model_only_backend_rows_are_read():
    import os

    import dcnet
    from dcnet.model import load_model

    model = load_model(os.path.join(os.path.dirname(dcnet.__file__), "examples", "elb.yaml"))
    slots = sum(len(s.real_servers) * len(s.ports) for s in model.services)
    asked: list = []
    text = scrape(ELBCollector(model=lambda: model, haproxy_stat=haproxy(3, asked),
                               bound=Bound(slots - 1)))
    assert asked == [BACKENDS_ONLY]
    assert "dcnet_haproxy_backend_servers{" not in text and "server_up{" not in text
    assert value(text, "dcnet_metrics_server_rows", source="haproxy") == slots
    assert value(text, "dcnet_haproxy_backend_sessions", port="80", service=f"{JOB}0") == 3
    assert value(text, "dcnet_elb_vip_healthy_servers", target="haproxy", port="80",
                 service=f"{JOB}0", carrier="") == 2          # the backend row's ``act``


def test_series_count_does_not_grow_with_connections():
    def table(active):
        return {"host": IPVSTable([IPVSRow("203.0.113.1", 80, "TCP", f"10.0.0.{i}:80",
                                           active, active, 1) for i in range(5)],
                                  {"connections": active})}

    few = scrape(ELBCollector(ipvs_tables=lambda: table(1), bound=Bound(2)))
    many = scrape(ELBCollector(ipvs_tables=lambda: table(10**6), bound=Bound(2)))
    assert few.count("\n") == many.count("\n")
    assert "dcnet_ipvs_server_connections{" not in many


def test_a_failing_source_is_reported_and_hides_nothing_else():
    def broken(which):
        raise OSError("no socket")

    text = scrape(ELBCollector(haproxy_stat=broken, ipvs_tables=lambda: {}))
    assert value(text, "dcnet_exporter_source_up", source="haproxy") == 0
    assert value(text, "dcnet_exporter_source_up", source="ipvs") == 1


def test_a_dual_stack_carrier_is_listed_once_in_the_service_info():
    from dcnet.metrics.elb import ServiceIndex
    from tests.unit.test_dns_ipv6 import model as dual_model

    index = ServiceIndex.of(dual_model())
    web = dual_model().services[0].name
    assert index.service_carriers[web] == ("telecom", "unicom", "bgp")
    assert 'carriers="telecom,unicom,bgp"' in index.info_text()
