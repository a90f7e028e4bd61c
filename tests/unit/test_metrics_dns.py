"""The metrics of ``elbctl dns follow``: a withdrawal and a restoration seen in the
series (withdrawn answer, events, applies), and the zone serials the DNS target reads
back moving with them; the loop runs against DNSTarget with a fake named."""

from __future__ import annotations

import pytest

from dcnet.dns.backend import DNSTarget
from dcnet.dns.fake import FakeRndc
from dcnet.dns.follow import Follower
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions
from dcnet.metrics.dns import DNSFollowCollector
from dcnet.sysio import proc
from tests.unit.metrics_text import samples, scrape
from tests.unit.test_dns_health import BGP_VIP, FAST, TELECOM_VIP, A, Clock, Counts, model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("key") / "rndc.key")
    proc.run(["rndc-confgen", "-a", "-c", path, "-k", "rndc-key"])
    return path


def test_withdrawal_and_restoration_in_the_series(tmp_path, key):
    directory = str(tmp_path / "bind")
    render_to_directory(model(FAST), ServerOptions(directory, key_file=key), check=False)
    named = FakeRndc(directory)
    source, clock = Counts({(TELECOM_VIP, 80): 1, (BGP_VIP, 80): 1}), Clock()

    def target():
        return DNSTarget(directory=directory, key_file=key, rndc=named)

    with Follower(model(FAST), [source], target, str(tmp_path / "state"),
                  log=lambda _: None, clock=clock, resync=3600) as loop:
        collector = DNSFollowCollector(loop, target)
        before = samples(scrape(collector))
        assert before[("dcnet_dns_follow_seconds_since_last_success", frozenset())] == \
            float("inf")
        loop.round()
        source.counts[(TELECOM_VIP, 80)] = 0
        for _ in range(3):
            clock.now += 1
            loop.round()
        during = samples(scrape(collector))
        withdrawn = frozenset({("service", A), ("carrier", "telecom")})
        assert during[("dcnet_dns_answer_withdrawn", withdrawn)] == 1
        assert sum(v for k, v in during.items() if k[0] == "dcnet_dns_answer_withdrawn") == 1
        assert during[("dcnet_dns_follow_events_total", frozenset({("event", "withdrawn")}))] == 1
        assert during[("dcnet_dns_follow_applies_total", frozenset({("result", "ok")}))] == 1
        assert during[("dcnet_dns_follow_rounds_total", frozenset())] == 4
        assert during[("dcnet_dns_health_sources_unreadable", frozenset())] == 0
        assert during[("dcnet_dns_follow_seconds_since_last_success", frozenset())] == 0
        serials = {k: v for k, v in during.items() if k[0] == "dcnet_dns_zone_serial"}
        assert serials and all(v > 0 for v in serials.values())
        source.counts[(TELECOM_VIP, 80)] = 1
        for _ in range(11):
            clock.now += 1
            loop.round()
        after = samples(scrape(collector))
        assert after[("dcnet_dns_answer_withdrawn", withdrawn)] == 0
        assert after[("dcnet_dns_follow_events_total", frozenset({("event", "restored")}))] == 1
        assert after[("dcnet_dns_follow_applies_total", frozenset({("result", "ok")}))] == 2
        moved = [k for k in serials if after.get(k, 0) > serials[k]]
        assert moved, "a withdrawal and a restoration reload a zone: its serial moves"
