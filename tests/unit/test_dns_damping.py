"""Damping of health-driven DNS (dcnet.dns.damping) in simulated time: when an answer is
withdrawn and restored, and that a flapping VIP does not flap DNS."""

from __future__ import annotations

import dataclasses

import pytest

from dcnet.dns.damping import Damper, Track, decayed, step
from dcnet.model.dns_health import DNSHealth

pytestmark = pytest.mark.unit

KEY = ("job.a", "telecom")
CFG = DNSHealth(down_after=4, up_after=30, flap_penalty=1000, suppress=2500, reuse=750,
                half_life=300, max_penalty=8000)


def drive(cfg: DNSHealth, health_at, until: float, poll: float = 1.0, start: float = 0.0,
          damper: Damper | None = None):
    """Poll every ``poll`` seconds from ``start`` to ``until``; ``health_at(t)`` is the VIP's
    health. Returns the damper and the (time, withdrawn) of every DNS transition."""
    damper = damper or Damper(cfg)
    transitions = []
    t = start
    while t <= until:
        for event in damper.observe({KEY: health_at(t)}, t):
            transitions.append((t, event.withdrawn))
        t += poll
    return damper, transitions


def test_withdrawn_after_down_after_and_restored_after_up_after():
    def health(t):
        return not 100 <= t < 200          # down from 100 s to 200 s
    damper, transitions = drive(CFG, health, 400)
    assert transitions == [(104, True), (230, False)]
    assert damper.withdrawn() == frozenset()


def test_a_blip_shorter_than_down_after_withdraws_nothing():
    _, transitions = drive(CFG, lambda t: not 100 <= t < 103, 400)
    assert transitions == []


def test_unknown_holds_the_answer_and_breaks_the_run():
    def health(t):
        if 100 <= t < 103 or 104 <= t < 107:
            return False
        return None if t == 103 else True
    _, transitions = drive(CFG, health, 200)
    assert transitions == []                # two 3-second runs, not one of 7 seconds
    # unknown while withdrawn keeps it withdrawn
    _, transitions = drive(CFG, lambda t: False if t < 50 else None, 500)
    assert transitions == [(4, True)]


def test_a_fast_flapping_vip_is_withdrawn_once_and_stays_withdrawn():
    def health(t):
        return (t // 10) % 2 == 0           # 10 s up, 10 s down, for ten minutes
    damper, transitions = drive(CFG, health, 600)
    assert transitions == [(14, True)]
    assert KEY in damper.withdrawn()


def slow_flaps(t):
    """Down 10 s every 60 s (longer up than up_after) for 20 minutes, then up."""
    return t >= 1200 or t % 60 >= 10


def test_slow_flapping_is_suppressed_by_the_penalty_and_reused_after_it_decays():
    damper, transitions = drive(CFG, slow_flaps, 3600)
    # the third flap (t=180) takes the penalty over suppress: withdrawn until the
    # flapping has stopped and the penalty decayed below reuse
    assert transitions[:7] == [(4, True), (40, False), (64, True), (100, False),
                               (124, True), (160, False), (180, True)]
    assert len(transitions) == 8
    restored_at, withdrawn = transitions[-1]
    assert not withdrawn and restored_at > 1200
    track = damper.tracks[KEY]
    assert track.penalty < CFG.reuse and not track.suppressed
    # restored in the poll where the penalty fell below reuse, not later
    at = {t: track.penalty * 2 ** ((3600 - t) / CFG.half_life)
          for t in (restored_at - 1, restored_at)}
    assert at[restored_at - 1] >= CFG.reuse > at[restored_at]


def test_the_penalty_is_what_stops_slow_flapping():
    no_damping = dataclasses.replace(CFG, suppress=1e9, max_penalty=1e9)
    _, transitions = drive(no_damping, slow_flaps, 1200)
    assert len(transitions) >= 30                        # 20 flaps, each out and back


def test_suppression_withdraws_at_the_flap_without_waiting_for_down_after():
    track = Track(withdrawn=False, healthy=True, since=0, penalty=2000, penalty_at=100)
    new, reason = step(track, False, 100, CFG)
    assert new.withdrawn and new.suppressed and "flapping" in reason
    new, reason = step(new, True, 140, CFG)              # healthy, up_after passed? no: 0 s
    assert new.withdrawn and reason is None


def test_the_penalty_decays_with_the_half_life_and_is_capped():
    assert decayed(1000, 300, 300) == pytest.approx(500)
    track = Track(healthy=True, since=0, penalty=7900, penalty_at=0)
    new, _ = step(track, False, 0, CFG)
    assert new.penalty == CFG.max_penalty


def test_state_round_trips_and_a_restart_does_not_flap():
    damper, _ = drive(CFG, lambda t: t < 10 or t >= 20, 40)       # withdrawn at 14
    assert KEY in damper.withdrawn()
    again = Damper.from_json(CFG, damper.to_json())
    assert again.withdrawn() == damper.withdrawn()
    assert again.tracks[KEY].penalty == damper.tracks[KEY].penalty
    # healthy since 20 s before the restart: the run starts again at the restart
    assert again.observe({KEY: True}, 41) == []
    _, transitions = drive(CFG, lambda t: True, 100, start=42, damper=again)
    assert transitions == [(71, False)]


def test_answers_left_out_of_an_observation_are_forgotten():
    damper = Damper(CFG)
    damper.observe({KEY: False, ("job.b", "telecom"): False}, 0)
    damper.observe({KEY: False}, 10)
    assert set(damper.tracks) == {KEY}
    assert damper.withdrawn() == {KEY}


def test_a_broken_state_file_is_refused():
    with pytest.raises(ValueError, match="not a DNS health state"):
        Damper.from_json(CFG, '{"tracks": [{"service": "x"}]}')
