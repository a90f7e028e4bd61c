"""The metrics of ``elbctl dns follow``: answers withdrawn by health, the loop's rounds,
applies and events, unreadable sources, and the SOA serial BIND serves per view and zone.

Read at scrape time from the running :class:`dcnet.dns.follow.Follower` (its damper and
counters) and from one read of the DNS target's directory; every series is bounded by the
model (services x carriers, views x zones). The text is written directly
(:mod:`dcnet.metrics.exposition`).
"""

from __future__ import annotations

from collections.abc import Callable

from dcnet.metrics.exposition import Family


class DNSFollowCollector:
    """A text source for an :class:`~dcnet.metrics.exposition.Exposition`."""

    def __init__(self, follower, target_factory: Callable[[], object] | None = None,
                 clock: Callable[[], float] | None = None):
        self.follower, self.target_factory = follower, target_factory
        self.clock = clock or follower.clock

    def exposition(self) -> str:
        return "".join(f.text() for f in self.families())

    def families(self) -> list[Family]:
        f = self.follower
        withdrawn = Family("dcnet_dns_answer_withdrawn", "1 while health keeps this "
                           "carrier's answer for the service on the default line",
                           "gauge", ("service", "carrier"))
        for (service, carrier), track in sorted(f.damper.tracks.items()):
            withdrawn.add((service, carrier), int(track.withdrawn))
        rounds = Family("dcnet_dns_follow_rounds", "Health polls done", "counter")
        rounds.add((), f.counts["rounds"])
        applies = Family("dcnet_dns_follow_applies", "DNS applies by result", "counter",
                         ("result",))
        applies.add(("ok",), f.counts["applies_ok"])
        applies.add(("failed",), f.counts["applies_failed"])
        events = Family("dcnet_dns_follow_events", "Answers withdrawn or restored",
                        "counter", ("event",))
        events.add(("withdrawn",), f.counts["withdrawn"])
        events.add(("restored",), f.counts["restored"])
        errors = Family("dcnet_dns_health_sources_unreadable", "Health sources that could "
                        "not be read at the last poll (their VIPs count as unknown)")
        errors.add((), f.source_errors)
        since = Family("dcnet_dns_follow_seconds_since_last_success", "Seconds since the "
                       "last successful plan or apply (+Inf: none yet)")
        last = f.last_success
        since.add((), float("inf") if last is None else max(0.0, self.clock() - last))
        return [withdrawn, rounds, applies, events, errors, since, self._serials()]

    def _serials(self) -> Family:
        serial = Family("dcnet_dns_zone_serial", "SOA serial of each zone file in each "
                        "view, as installed", "gauge", ("view", "zone"))
        if self.target_factory is None:
            return serial
        target = self.target_factory()
        try:
            state = target.read().state
        except Exception:              # an unreadable directory: no serials this scrape
            return serial
        finally:
            close = getattr(target, "close", None)
            if close:
                close()
        for key, value in sorted(state.items(), key=lambda kv: str(kv[0])):
            if key[0] == "zone" and value.get("serial") is not None:
                view, zone = key[1]
                serial.add((view, zone), value["serial"])
        return serial
