"""Netns tests of carrier-aware DNS: a real named in a lab namespace, clients per carrier.

Lab: host ``dns`` runs named (rndc on 127.0.0.1 inside it) and has one link per client;
``cli-<carrier>`` clients have addresses inside that carrier's client list, ``cli-none``
one inside no list. Every query goes from a lab client to the lab's named. The target is
driven as every caller drives it: :class:`DNSTarget` + :func:`dcnet.target.apply_plan`,
or ``elbctl plan|apply --target dns`` subprocesses (one locked session each).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dcnet.dns import bind
from dcnet.dns.backend import DNSTarget
from dcnet.dns.carriers import CarrierListError
from dcnet.dns.layout import answer
from dcnet.lab.dns_lab import dig, make_rndc_key, soa_serial, start_named
from dcnet.model import load_model
from dcnet.sysio import proc
from dcnet.target import StalePlan, apply_plan

pytestmark = pytest.mark.netns

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ZONE = "elb.example.com"
OCEAN = "ocean-monitor-job.production-ig.ocean.inf.elb.example.com"
PUSH = "push.production-ig.mipush.inf.elb.example.com"
RESOLVER = "dns-cache.production-ig.infra.inf.elb.example.com"
# client -> (server address on its link, client address): inside each carrier's list
CLIENTS = {
    "telecom": ("192.0.2.1", "192.0.2.2"),
    "unicom": ("192.0.2.65", "192.0.2.66"),
    "mobile": ("192.0.2.129", "192.0.2.130"),
    "none": ("10.99.0.1", "10.99.0.2"),
}
# What each client must get for each name (example model; bgp is the default line).
EXPECTED = {
    "telecom": {OCEAN: "198.51.100.10", PUSH: "198.51.100.11", RESOLVER: "203.0.113.53"},
    "unicom": {OCEAN: "198.51.100.74", PUSH: "203.0.113.11", RESOLVER: "203.0.113.53"},
    "mobile": {OCEAN: "198.51.100.138", PUSH: "203.0.113.11", RESOLVER: "203.0.113.53"},
    "none": {OCEAN: "203.0.113.10", PUSH: "203.0.113.11", RESOLVER: "203.0.113.53"},
}


def topology() -> dict:
    hosts = ["dns", *(f"cli-{c}" for c in CLIENTS)]
    links = [{"a": {"host": "dns", "ifname": f"to-{c}", "addresses": [f"{server}/26"]},
              "b": {"host": f"cli-{c}", "ifname": "eth0", "addresses": [f"{client}/26"]}}
             for c, (server, client) in CLIENTS.items()]
    return {"hosts": hosts, "links": links}


class DNSLab:
    """The lab, the model files, the BIND directory and a running named."""

    def __init__(self, lab, root: Path):
        self.lab = lab
        self.model_dir = root / "model"
        shutil.copytree(EXAMPLES, self.model_dir)
        self.model_path = self.model_dir / "elb.yaml"
        self.bind_dir = root / "bind"
        make_rndc_key(str(self.bind_dir))
        self.netns = lab.netns("dns")

    def target(self, **options) -> DNSTarget:
        return DNSTarget(directory=str(self.bind_dir), netns=self.netns, **options)

    def elbctl(self, *args: str) -> subprocess.CompletedProcess:
        return proc.run([sys.executable, "-m", "dcnet.cli.elbctl", *args], netns=self.netns,
                        check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                          "DCNET_DNS_DIR": str(self.bind_dir)})

    def edit_model(self, mutate, path: Path | None = None) -> Path:
        """Write the example model after ``mutate(data)`` to ``path`` (default: elb.yaml)."""
        data = yaml.safe_load((EXAMPLES / "elb.yaml").read_text() if path else
                              self.model_path.read_text())
        mutate(data)
        path = path or self.model_path
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def model(self, path: Path | None = None):
        return load_model(path or self.model_path)

    def answer(self, client: str, name: str) -> list[str]:
        return dig(self.lab, f"cli-{client}", CLIENTS[client][0], name)

    def answers(self) -> dict:
        return {c: {n: self.answer(c, n) for n in (OCEAN, PUSH, RESOLVER)} for c in CLIENTS}

    def serials(self) -> dict:
        return {c: soa_serial(self.lab, f"cli-{c}", CLIENTS[c][0], ZONE) for c in CLIENTS}

    def files(self) -> dict:
        return {p.name: p.read_bytes() for p in sorted(self.bind_dir.iterdir())
                if p.name.startswith(("named.conf", "db."))}


def expected_answers(**changes) -> dict:
    out = {c: {n: [a] for n, a in names.items()} for c, names in EXPECTED.items()}
    for client, names in changes.items():
        out[client].update({n: [a] for n, a in names.items()})
    return out


@pytest.fixture
def dns(lab_factory, tmp_path) -> DNSLab:
    """Rendered with ``elbctl render dns`` (the real CLI), then named started on it."""
    lab = lab_factory(topology())
    env = DNSLab(lab, tmp_path)
    done = env.elbctl("render", "dns", "-f", str(env.model_path), "-o", str(env.bind_dir))
    assert done.returncode == 0, done.stderr
    assert "checked by named-checkzone and named-checkconf -z" in done.stdout
    start_named(lab, "dns", str(env.bind_dir), env.target().rndc)
    return env


def test_each_carrier_resolves_to_its_own_vip_and_unknown_to_default(dns):
    assert dns.answers() == expected_answers()
    assert dns.target().plan(dns.model()).empty      # render and apply agree: no changes


def test_change_to_one_service_reloads_only_its_zone(dns):
    serials = dns.serials()

    def move_push(data):
        data["services"][1]["vips"]["telecom"] = "198.51.100.12"
    dns.edit_model(move_push)
    target = dns.target()
    plan = target.plan(dns.model())
    assert [(c.action.value, c.kind, c.key) for c in plan.changes] == [
        ("update", "zone", ("telecom", ZONE))]
    assert "apply runs: rndc reload elb.example.com IN telecom" in plan.notes
    assert not any("reconfig" in n for n in plan.notes)
    result = apply_plan(target, plan)
    assert result.ok, result.to_text()
    assert target.commands == ["rndc reload elb.example.com IN telecom"]
    assert result.writes == {"rndc": 1, "files": 1}
    assert dns.answers() == expected_answers(telecom={PUSH: "198.51.100.12"})
    after = dns.serials()
    assert after["telecom"] > serials["telecom"]
    assert {c: s for c, s in after.items() if c != "telecom"} == {
        c: s for c, s in serials.items() if c != "telecom"}
    assert dns.target().plan(dns.model()).empty       # a second apply changes nothing


def test_carrier_down_falls_back_to_default_by_a_reload_of_its_zone_only(dns):
    """Down and up again change mobile's zone content only: one reload each, no reconfig
    (which zones views share depends on the model with every carrier up), the default
    view keeps its own zone file."""
    before = dns.serials()

    def mobile_down(data):
        data["carriers"][2]["down"] = True
    dns.edit_model(mobile_down)
    plan = dns.elbctl("plan", "--target", "dns", "-f", str(dns.model_path))
    assert "~ zone mobile elb.example.com (digest" in plan.stdout
    assert "zone bgp" not in plan.stdout and "rndc reconfig" not in plan.stdout
    assert "note: apply runs: rndc reload elb.example.com IN mobile" in plan.stdout
    assert "note: carrier mobile is marked down" in plan.stdout
    result = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))
    assert result.returncode == 0, result.stdout + result.stderr
    conf = (dns.bind_dir / "named.conf").read_text()
    assert "in-view" not in conf
    assert (dns.bind_dir / "db.bgp.elb.example.com").exists()
    assert dns.answers() == expected_answers(mobile=EXPECTED["none"])
    assert {c: s for c, s in dns.serials().items() if c != "mobile"} == {
        c: s for c, s in before.items() if c != "mobile"}

    def mobile_up(data):
        data["carriers"][2]["down"] = False
    dns.edit_model(mobile_up)
    target = dns.target()
    result = apply_plan(target, target.plan(dns.model()))
    assert result.ok, result.to_text()
    assert target.commands == ["rndc reload elb.example.com IN mobile"]
    assert dns.answers() == expected_answers()


def test_overlapping_lists_never_reach_named(dns):
    before = dns.files()
    with open(dns.model_dir / "carriers" / "unicom.txt", "a") as fh:
        fh.write("192.0.2.0/24\n")
    result = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))
    assert result.returncode == 1
    assert "192.0.2.0/24 of carrier 'unicom'" in result.stderr
    assert "overlaps 192.0.2.0/26 of carrier 'telecom'" in result.stderr
    assert dns.files() == before
    assert dns.answers() == expected_answers()


def test_broken_model_never_reaches_named(dns):
    before = dns.files()
    with open(dns.model_dir / "carriers" / "telecom.txt", "a") as fh:
        fh.write("192.0.2.300/24\n")
    result = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))
    assert result.returncode == 1
    assert "telecom.txt:4" in result.stderr
    assert dns.files() == before
    assert dns.answers() == expected_answers()


def test_config_named_checkconf_rejects_is_never_installed(dns):
    before = dns.files()

    def move_push(data):
        data["services"][1]["vips"]["telecom"] = "198.51.100.12"
    dns.edit_model(move_push)
    with pytest.raises(bind.BindError, match="named-checkconf -z failed"):
        dns.target(listen="no-such-acl").plan(dns.model())
    assert dns.files() == before
    assert dns.answers() == expected_answers()


def test_change_guard_refuses_big_list_change_unless_forced(dns):
    (dns.model_dir / "carriers" / "telecom.txt").write_text("100.64.10.0/24\n100.64.11.0/24\n")
    with pytest.raises(CarrierListError, match=r"'telecom'.*200% of its 2 installed"):
        dns.target().plan(dns.model())
    result = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))
    assert result.returncode == 1 and "needs --force" in result.stderr
    assert dns.answers() == expected_answers()
    result = dns.elbctl("apply", "--target", "dns", "--force", "-f", str(dns.model_path))
    assert result.returncode == 0, result.stdout + result.stderr
    # 192.0.2.2 is in no list any more: the old telecom client now gets the default
    assert dns.answers() == expected_answers(telecom=EXPECTED["none"])


def test_named_down_gives_a_clear_error_and_installs_nothing(dns):
    proc.stop(dns.lab.process("named"))
    before = dns.files()

    def move_push(data):
        data["services"][1]["vips"]["telecom"] = "198.51.100.12"
    dns.edit_model(move_push)
    result = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))
    assert result.returncode == 3                       # the target is unavailable
    assert "named is not answering rndc at 127.0.0.1#953" in result.stderr
    assert "Nothing was installed" in result.stderr
    assert dns.files() == before


def move_push(data):
    data["services"][1]["vips"]["telecom"] = "198.51.100.12"


def test_a_fresh_instance_applies_a_plan_made_by_another(dns):
    dns.edit_model(move_push)
    planner = dns.target()
    plan = planner.plan(dns.model())
    fresh = dns.target()
    result = apply_plan(fresh, plan)
    assert result.ok, result.to_text()
    assert planner.commands == [] and fresh.commands == [
        "rndc reload elb.example.com IN telecom"]
    assert dns.answers() == expected_answers(telecom={PUSH: "198.51.100.12"})
    assert dns.target().plan(dns.model()).empty


def test_a_plan_made_stale_by_another_apply_is_refused(dns):
    dns.edit_model(move_push)
    stale = dns.target().plan(dns.model())
    first = dns.elbctl("apply", "--target", "dns", "-f", str(dns.model_path))  # wins the race
    assert first.returncode == 0, first.stdout + first.stderr
    before = dns.files()
    with pytest.raises(StalePlan, match="changed since the plan"):
        apply_plan(dns.target(), stale)
    assert dns.files() == before


def test_a_failed_apply_puts_the_previous_files_back(dns):
    """named dies after the first rndc step: the next change fails, undo restores every
    file (its rndc commands fail too, and are reported); named restarted on the restored
    files answers as before."""
    before = dns.files()

    def mobile_down_and_push(data):
        data["carriers"][2]["down"] = True
        move_push(data)
    dns.edit_model(mobile_down_and_push)
    target = dns.target()
    plan = target.plan(dns.model())
    assert len(plan.changes) >= 2 and plan.changes[0].kind == "zone"

    def kill_named(change):
        if len(target.commands) == 1 and dns.lab.process("named").poll() is None:
            proc.stop(dns.lab.process("named"))
    result = apply_plan(target, plan, on_step=kill_named)
    assert not result.ok and isinstance(result.error, bind.NamedDown), result.to_text()
    assert result.undone or result.undo_errors
    assert dns.files() == before
    start_named(dns.lab, "dns", str(dns.bind_dir), target.rndc, name="named-again")
    assert dns.answers() == expected_answers()
    original = dns.edit_model(lambda data: None, dns.model_path)
    assert dns.target().plan(dns.model(original)).empty


def expected_for(model) -> dict:
    """What each lab client must be answered for ``model`` (its carrier, or the default)."""
    carriers = {c.name: c for c in model.carriers}
    out = {}
    for client in CLIENTS:
        carrier = carriers.get(client, model.default_carrier)
        out[client] = {model.dns.name(s.job): [str(answer(s, carrier, model))]
                       for s in model.services
                       if model.dns.name(s.job) in (OCEAN, PUSH, RESOLVER)}
    return out


def test_concurrent_elbctl_applies_leave_named_equal_to_one_model(dns):
    """Four ``elbctl apply --target dns`` of four models at once, 5 rounds: every round
    ends with the plan of exactly one of them empty and named answering as it says."""
    def unicom_ocean(data):
        data["services"][0]["vips"]["unicom"] = "198.51.100.75"

    def mobile_down(data):
        data["carriers"][2]["down"] = True

    # any two differ in at most 3 of the 12 objects: under the 30% change guard
    variants = [lambda data: None, move_push, mobile_down, unicom_ocean]
    paths = [dns.edit_model(v, dns.model_dir / f"elb-{i}.yaml") for i, v in enumerate(variants)]
    models = [dns.model(p) for p in paths]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DCNET_DNS_DIR": str(dns.bind_dir),
           "DCNET_DNS_NETNS": dns.netns}
    rng = random.Random(12)
    for round_ in range(5):
        order = rng.sample(range(4), 4)
        runs = [subprocess.Popen([sys.executable, "-m", "dcnet.cli.elbctl", "apply",
                                  "--target", "dns", "-f", str(paths[i])], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in order]
        for run in runs:
            out, err = run.communicate(timeout=600)
            assert run.returncode == 0, f"round {round_}: {out}{err}"
        empty = [i for i, m in enumerate(models) if dns.target().plan(m).empty]
        assert len(empty) == 1, f"round {round_}: plans empty for models {empty}"
        assert dns.answers() == expected_for(models[empty[0]]), f"round {round_}"
