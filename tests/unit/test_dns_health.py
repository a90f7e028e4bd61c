"""Health-driven DNS: the health sources' parsing (captured HAProxy output, the IPVS fake,
an etcd registry), observations per answer, the model overlay, ``dns.health`` validation,
and the follow loop against DNSTarget with a fake named (files and checks real)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from dcnet.dns.backend import DNSTarget
from dcnet.dns.fake import FakeRndc
from dcnet.dns.follow import STATE_FILE, FollowBusy, Follower, overlay
from dcnet.dns.health import (
    HAProxySource,
    IPVSSource,
    SourceError,
    haproxy_counts,
    observe,
    read_all,
    registry_counts,
)
from dcnet.dns.installed import read_directory
from dcnet.dns.layout import answer
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions
from dcnet.haproxy.runtime import parse_servers_state
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import CMD_NEW_DEST, CMD_NEW_SERVICE, Request, WireDest, WireService
from dcnet.model import ModelError, parse_model
from dcnet.sysio import proc
from tests.unit.model_fixtures import FILES, model_text, read_file

pytestmark = pytest.mark.unit

TELECOM_VIP, BGP_VIP, B_VIP = "198.51.100.10", "203.0.113.10", "203.0.113.11"
A, B = (str(parse_model(model_text(), read_text=read_file()).services[i].job) for i in (0, 1))
FAST = {"down_after": 2, "up_after": 10, "half_life": 60}


def model(health=None):
    def mutate(data):
        if health is not None:
            data["dns"] = {"zone": "elb.internal", "health": health}
    return parse_model(model_text(mutate), read_text=read_file())


HEADER = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
          "srv_uweight srv_iweight srv_time_since_last_change srv_check_status "
          "srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id "
          "srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
          "srv_check_addr srv_agent_addr srv_agent_port\n")


def row(backend, srv_id, addr, op, admin, weight):
    return (f"3 {backend} {srv_id} s{srv_id} {addr} {op} {admin} {weight} {weight} 1 15 3 4 "
            f"6 0 0 0 - 8080 - 0 0 - - 0\n")


def servers_state(*states) -> str:
    """``show servers state`` of backend A:80 with one row per (op, admin, weight)."""
    return HEADER + "".join(row(f"{A}:80", i, f"10.0.0.{i}", *s)
                            for i, s in enumerate(states, 1))


UP, DOWN = 2, 0


def test_haproxy_counts_only_up_servers_neither_in_maintenance_nor_draining():
    text = servers_state((UP, 0, 10), (DOWN, 0, 1), (UP, 0x01, 1), (UP, 0x08, 1),
                         (UP, 0, 0), (UP, 0x04, 3))       # 0x04: a runtime-filled slot
    counts = haproxy_counts(model(), parse_servers_state(text))
    assert counts == {(TELECOM_VIP, 80): 2, (BGP_VIP, 80): 2}
    scoped = haproxy_counts(model(), parse_servers_state(text), carriers=["telecom"])
    assert scoped == {(TELECOM_VIP, 80): 2}
    none_up = haproxy_counts(model(), parse_servers_state(servers_state((DOWN, 0, 1))))
    assert none_up == {(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 0}
    # a backend HAProxy does not have is unknown, not unhealthy
    assert haproxy_counts(model(), []) == {}


def test_an_unreachable_haproxy_is_a_source_error(tmp_path):
    source = HAProxySource(str(tmp_path / "admin.sock"))
    with pytest.raises(SourceError, match="does not exist"):
        source.read(model())
    counts, errors = read_all([source], model())
    assert counts == {} and len(errors) == 1


def wsvc(addr, port=80, **kw):
    return WireService(socket.AF_INET, socket.IPPROTO_TCP, addr, port, **kw)


def test_ipvs_counts_dests_with_weight_above_zero_on_the_fake_table():
    table = FakeIPVS()
    tel, bgp, mark = wsvc(TELECOM_VIP), wsvc(BGP_VIP), WireService(socket.AF_INET, 0, "", 0,
                                                                      fwmark=7)
    requests = [Request(CMD_NEW_SERVICE, s) for s in (tel, bgp, mark)]
    requests += [Request(CMD_NEW_DEST, tel, WireDest(socket.AF_INET, "10.0.0.1", 8080, 0, 0)),
                 Request(CMD_NEW_DEST, bgp, WireDest(socket.AF_INET, "10.0.0.1", 8080, 0, 0)),
                 Request(CMD_NEW_DEST, bgp, WireDest(socket.AF_INET, "10.0.0.2", 8080, 0, 5)),
                 Request(CMD_NEW_DEST, mark, WireDest(socket.AF_INET, "10.0.0.2", 80, 3, 5))]
    assert table.execute(requests) == [0] * len(requests)
    counts = IPVSSource(table=table).read(model())
    assert counts == {(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 1}


def test_registry_counts_effective_servers_of_services_with_registered_backends():
    registry = {A: {"10.0.0.1": {"weight": 1, "state": "removed"},
                    "10.0.0.2": {"weight": 1, "state": "draining"}}}
    assert registry_counts(model(), registry) == {(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 0}
    registry[A]["10.0.0.9"] = {"weight": 3, "state": "active"}
    assert registry_counts(model(), registry, ["telecom"]) == {(TELECOM_VIP, 80): 1}
    assert registry_counts(model(), {}) == {}


def test_observations_per_answer():
    m = model()
    assert observe(m, {(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 1}) == {(A, "telecom"): False}
    assert observe(m, {(TELECOM_VIP, 80): 2}) == {(A, "telecom"): True}
    assert observe(m, {(BGP_VIP, 80): 1}) == {(A, "telecom"): None}
    # the default line dead too: falling back gains nothing
    assert observe(m, {(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 0}) == {(A, "telecom"): None}


def test_overlay_falls_back_to_the_default_line_like_down():
    m = model()
    telecom = m.carrier("telecom")
    assert str(answer(m.service(A), telecom, m)) == TELECOM_VIP
    moved = overlay(m, {(A, "telecom")})
    assert str(answer(moved.service(A), telecom, moved)) == BGP_VIP
    assert str(answer(moved.service(B), telecom, moved)) == str(answer(m.service(B), telecom, m))
    assert moved.services == m.services and overlay(m, ()) is m


@pytest.mark.parametrize("health, message", [
    ({"up_after": -1}, "between"), ({"reuse": 3000}, "reuse < suppress"),
    ({"half_life": 0}, "between"), ({"bogus": 1}, "unknown field")])
def test_dns_health_settings_are_validated_at_load(health, message):
    with pytest.raises(ModelError, match=message):
        model(health)
    assert model(FAST).dns.health.up_after == 10


# ---------------------------------------------------------------- the follow loop


class Counts:
    """A health source whose counts the test sets (stands in for the three sources,
    whose reads are tested above)."""

    name = "test"

    def __init__(self, counts):
        self.counts = counts

    def read(self, m):
        return dict(self.counts)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def rndc_key(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("key") / "rndc.key")
    proc.run(["rndc-confgen", "-a", "-c", path, "-k", "rndc-key"])
    return path


def telecom_answer(directory: str) -> str:
    """The address the telecom view's zone file gives service A."""
    config = read_directory(directory)
    decl = config.zones[("telecom", "elb.internal")]
    owner = decl["in_view"] or "telecom"
    text = Path(directory, config.zones[(owner, "elb.internal")]["file"]).read_text()
    name = model().dns.relative_name(model().service(A).job)
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


def test_follow_withdraws_restores_applies_only_on_change_and_survives_a_restart(
        tmp_path, rndc_key):
    directory, state_dir = str(tmp_path / "bind"), str(tmp_path / "bind" / ".dcnet-health")
    render_to_directory(model(FAST), ServerOptions(directory, key_file=rndc_key), check=False)
    named = FakeRndc(directory)
    source, clock, logs = Counts({(TELECOM_VIP, 80): 1, (BGP_VIP, 80): 1}), Clock(), []

    def follower():
        return Follower(model(FAST), [source], lambda: DNSTarget(
            directory=directory, key_file=rndc_key, rndc=named), state_dir,
            log=logs.append, clock=clock, resync=3600)

    def tick(seconds=1.0):
        clock.now += seconds
        return loop.round()

    with follower() as loop:
        first = loop.round()
        assert first.planned and first.changes == 0 and named.calls == []
        source.counts[(TELECOM_VIP, 80)] = 0
        assert not tick().planned                  # unhealthy for 0 s, then 1 s
        assert not tick().planned
        withdrawn = tick()                         # 2 s = down_after
        assert withdrawn.withdrawn == {(A, "telecom")} and withdrawn.applied
        assert telecom_answer(directory) == BGP_VIP
        # a reload of telecom's zone only: no reconfig re-declaring the default view's zone
        assert withdrawn.apply_error is None
        assert named.calls == ["status", "reload elb.internal IN telecom"]
        assert any("withdrawn (no healthy real server for 2.0s)" in line for line in logs)
        calls = list(named.calls)
        assert not tick().planned and named.calls == calls      # nothing changed
        mode = os.stat(os.path.join(state_dir, STATE_FILE)).st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
        with pytest.raises(FollowBusy), follower():
            pass
    source.counts[(TELECOM_VIP, 80)] = 1
    with follower() as loop:                       # a restart keeps it withdrawn
        again = loop.round()
        assert again.planned and again.changes == 0 and named.calls == calls
        for _ in range(9):
            assert not tick().planned
        restored = tick()                          # healthy 10 s = up_after
        assert restored.withdrawn == frozenset() and restored.applied
        assert telecom_answer(directory) == TELECOM_VIP
        assert named.calls[len(calls):] == ["status", "reload elb.internal IN telecom"]


def test_follow_keeps_dns_as_it_is_when_the_source_cannot_be_read(tmp_path, rndc_key):
    directory = str(tmp_path / "bind")
    render_to_directory(model(FAST), ServerOptions(directory, key_file=rndc_key), check=False)
    named, clock, logs = FakeRndc(directory), Clock(), []
    loop = Follower(model(FAST), [HAProxySource(str(tmp_path / "gone.sock"))],
                    lambda: DNSTarget(directory=directory, key_file=rndc_key, rndc=named),
                    str(tmp_path / "state"), log=logs.append, clock=clock)
    for _ in range(20):
        clock.now += 1
        result = loop.round()
        assert result.withdrawn == frozenset() and result.errors
    assert named.calls == [] and telecom_answer(directory) == TELECOM_VIP
    assert any("unreadable" in line for line in logs)


def test_elbctl_dns_follow_once_needs_a_source_and_runs_one_round(tmp_path, rndc_key):
    from click.testing import CliRunner

    from dcnet.cli.elbctl import cli
    from dcnet.model.dns_section import DNSSettings

    models = tmp_path / "m"
    models.mkdir()
    (models / "telecom.txt").write_text(FILES["telecom.txt"])
    (models / "elb.yaml").write_text(model_text())
    directory = str(tmp_path / "bind")
    m = model()
    assert m.dns == DNSSettings()
    render_to_directory(m, ServerOptions(directory, key_file=rndc_key), check=False)
    base = ["dns", "follow", "-f", str(models / "elb.yaml"), "--dns-dir", directory,
            "--dns-rndc-key", rndc_key]
    result = CliRunner().invoke(cli, [*base, "--once"])
    assert result.exit_code == 2 and "at least one health source" in result.output
    result = CliRunner().invoke(cli, [*base, "--once", "--haproxy",
                                      f"{tmp_path / 'none.sock'}=telecom"])
    assert result.exit_code == 0, result.output
    assert "health source unreadable" in result.output
    assert "dns applied" not in result.output and "apply failed" not in result.output
    assert stat.S_IMODE(os.stat(tmp_path / "bind" / ".dcnet-health").st_mode) == 0o700


def test_a_failed_apply_is_retried_with_backoff_and_a_reloaded_model_is_applied(
        tmp_path, rndc_key):
    directory = str(tmp_path / "bind")
    render_to_directory(model(FAST), ServerOptions(directory, key_file=rndc_key), check=False)
    named, clock, logs = FakeRndc(directory), Clock(), []
    named.stop()
    source = Counts({(TELECOM_VIP, 80): 0, (BGP_VIP, 80): 1})
    models = tmp_path / "m"
    models.mkdir()
    (models / "telecom.txt").write_text(FILES["telecom.txt"])
    path = models / "elb.yaml"
    path.write_text(model_text(lambda d: d.update(dns={"health": FAST})))
    from dcnet.model import load_model
    loop = Follower(load_model(path), [source], lambda: DNSTarget(
        directory=directory, key_file=rndc_key, rndc=named), str(tmp_path / "state"),
        log=logs.append, clock=clock, model_path=str(path), model_loader=load_model)
    planned = []
    for second in range(12):
        clock.now = 1000 + second
        result = loop.round()
        if result.planned:
            planned.append((second, result.apply_error is not None))
    # withdrawn at 2 s; named down: tried at 2, 3, 5 and 9 s (backoff 1, 2, 4 s)
    assert planned == [(0, False), (2, True), (3, True), (5, True), (9, True)]
    assert any("retried in 4s" in line for line in logs)
    named.start()
    clock.now = 1016
    assert not loop.round().planned             # next try at 9 + 8 s
    clock.now = 1017
    assert loop.round().applied
    assert telecom_answer(directory) == BGP_VIP
    # the model file changes: reloaded and planned in the next round
    path.write_text(model_text(lambda d: d.update(dns={"health": FAST, "ttl": 30})))
    os.utime(path, (2000, 2000))
    clock.now = 1018
    result = loop.round()
    assert result.planned and result.applied and loop.model.dns.ttl == 30
    assert any("reloaded" in line for line in logs)
