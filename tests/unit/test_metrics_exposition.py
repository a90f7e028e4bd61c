"""The directly written text exposition: valid for Prometheus' own parser, escaped,
counters suffixed, integers printed as integers, and the same as ``prometheus_client``
writes for the same samples."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dcnet.metrics.exposition import Exposition, Family, LabelCache, labels, number
from dcnet.metrics.haproxy_stat import parse_show_stat
from tests.unit.metrics_text import samples

pytestmark = pytest.mark.unit


def test_values_and_escaping():
    assert [number(v) for v in (3, 0, True, 0.5, float("inf"), float("-inf"))] == \
        ["3.0", "0.0", "1.0", "0.5", "+Inf", "-Inf"]
    assert number(10**16) == "1e+16"
    assert number(float("nan")) == "NaN"
    assert labels(("a", "b"), ('x"y', "back\\slash\nnl")) == \
        '{a="x\\"y",b="back\\\\slash\\nnl"}'
    assert labels((), ()) == ""


def test_same_samples_as_prometheus_client():
    ours = Family("dcnet_x", "Help with \\ backslash", "counter", ("service", "port"))
    gauge = Family("dcnet_y", "A gauge", "gauge", ("service",))
    cache = LabelCache(("service", "port"))
    ours.add_formatted(cache.get(('we"ird', "80")), 7)
    ours.add(("plain", "443"), 2.5)
    gauge.add(("a\nb",), 1)
    registry = CollectorRegistry()

    class Reference:
        def collect(self):
            c = CounterMetricFamily("dcnet_x", "Help with \\ backslash",
                                    labels=["service", "port"])
            c.add_metric(['we"ird', "80"], 7)
            c.add_metric(["plain", "443"], 2.5)
            g = GaugeMetricFamily("dcnet_y", "A gauge", labels=["service"])
            g.add_metric(["a\nb"], 1)
            return [c, g]

    registry.register(Reference())
    reference = generate_latest(registry).decode()
    text = ours.text() + gauge.text()
    assert samples(text) == samples(reference)
    assert "# TYPE dcnet_x_total counter" in text
    assert text == reference                    # byte for byte


def test_empty_family_prints_nothing_and_bad_kind_is_refused():
    assert Family("dcnet_z", "nothing").text() == ""
    with pytest.raises(ValueError, match="histogram"):
        Family("dcnet_z", "no", "histogram")


def test_exposition_joins_text_sources_and_a_registry():
    class Source:
        def exposition(self):
            family = Family("dcnet_text", "from text")
            family.add((), 1)
            return family.text()

    class Plain:
        def collect(self):
            g = GaugeMetricFamily("dcnet_plain", "from a collector")
            g.add_metric([], 2)
            return [g]

    exposition = Exposition()
    exposition.register(Source())
    exposition.register(Plain())
    got = samples(exposition.generate().decode())
    assert got[("dcnet_text", frozenset())] == 1 and got[("dcnet_plain", frozenset())] == 2


@pytest.mark.parametrize("header,row", [
    # addr before the last needed column, and far after it (HAProxy's real layout)
    ("# pxname,svname,addr,scur,stot,bin,bout,status,weight,act,type,",
     "j:80,s1,10.0.0.1:80,1,2,3,4,MAINT,1,0,2,"),
    ("# pxname,svname,scur,stot,bin,bout,status,weight,act,type," + "x," * 40 + "addr,",
     "j:80,s1,1,2,3,4,MAINT,1,0,2," + "," * 40 + "10.0.0.1:80,"),
])
def test_show_stat_reads_addr_wherever_it_is(header, row):
    free = row.replace("10.0.0.1:80", "0.0.0.0:0")
    stats = parse_show_stat("\n".join([header, row, free]) + "\n")
    assert [(s.server, s.state) for s in stats.servers] == [("10.0.0.1:80", "maint")]


def test_the_haproxy_backend_label_set_is_what_labels_writes():
    from dcnet.metrics.haproxy_stat import service_port_labels

    for service, port in (("job.web_service.shop", "80"), ('we"ird\\one\n', "443")):
        assert service_port_labels(service, port) == labels(("service", "port"),
                                                            (service, port))
