"""DNSTarget's apply path against :class:`dcnet.dns.fake.FakeRndc` (named faked, files real).

The plan is the real one (named-checkzone / named-checkconf -z on a staged copy, as in
tests/unit/test_dns.py); apply writes a BIND directory in a temporary directory and talks
to the fake, which loads files the way named does (tests/netns/test_dns_rndc_contract.py
keeps it honest). The tests assert what named ends up serving: every zone of every view at
the serial its installed file says, or, after a failed apply, what it served before.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from dcnet.dns import bind
from dcnet.dns.backend import DNSTarget
from dcnet.dns.fake import FakeRndc
from dcnet.dns.installed import read_directory
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions
from dcnet.model import parse_model
from dcnet.sysio import proc
from dcnet.target import apply_plan
from tests.unit.model_fixtures import model_text, read_file

pytestmark = pytest.mark.unit

TODAY = dt.date(2024, 5, 17)
ZONE = "elb.internal"
FILES = {"telecom.txt": "192.0.2.0/26\n100.64.1.0/24\n", "unicom.txt": "192.0.2.64/26\n",
         "mobile.txt": "192.0.2.128/26\n"}


def with_unicom(data):
    data["carriers"].insert(1, {"name": "unicom", "uplink": "cuc0", "gateway": "198.51.100.65",
                                "table": 102, "vip_ranges": ["198.51.100.64/26"],
                                "cidrs": "unicom.txt"})


def add_mobile(data):
    data["carriers"].insert(2, {"name": "mobile", "uplink": "cm0",
                                "gateway": "198.51.100.129", "table": 103,
                                "vip_ranges": ["198.51.100.128/26"], "cidrs": "mobile.txt"})


def move_telecom(data):
    data["services"][0]["vips"]["telecom"] = "198.51.100.12"


def unshare_unicom(data):
    """unicom's zone stops equalling the default's: bgp goes from in-view to its own file."""
    data["services"][1]["vips"]["unicom"] = "198.51.100.70"


def model(*mutations):
    def mutate(data):
        with_unicom(data)
        for m in mutations:
            m(data)
    return parse_model(model_text(mutate), read_text=read_file(FILES))


@pytest.fixture(scope="module")
def rndc_key(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("key") / "rndc.key")
    proc.run(["rndc-confgen", "-a", "-c", path, "-k", "rndc-key"])
    return path


class Setup:
    """A BIND directory rendered from ``model()`` and a fake named started on it."""

    def __init__(self, directory: str, key: str):
        self.directory, self.key = directory, key
        render_to_directory(model(), ServerOptions(directory, key_file=key), check=False)
        self.named = FakeRndc(directory)

    def target(self) -> DNSTarget:
        return DNSTarget(directory=self.directory, key_file=self.key, today=TODAY,
                         rndc=self.named)

    def files(self) -> dict:
        return {n: Path(self.directory, n).read_text()
                for n in sorted(os.listdir(self.directory)) if n.startswith(("named", "db."))}

    def file_serials(self) -> dict:
        """(view, zone) -> the serial the installed files say that view serves."""
        config = read_directory(self.directory)
        return {key: config.zone_files[(d["in_view"], key[1]) if d["in_view"] else key].serial
                for key, d in config.zones.items()}


@pytest.fixture
def bind_dir(tmp_path, rndc_key) -> Setup:
    return Setup(str(tmp_path / "bind"), rndc_key)


def test_a_content_change_reloads_only_its_zone_and_named_serves_the_new_serial(bind_dir):
    before = bind_dir.named.serials()
    target = bind_dir.target()
    result = apply_plan(target, target.plan(model(move_telecom)))
    assert result.ok, result.to_text()
    assert bind_dir.named.calls == ["status", f"reload {ZONE} IN telecom"]
    served = bind_dir.named.serials()
    assert served == bind_dir.file_serials()
    assert served[("telecom", ZONE)] > before[("telecom", ZONE)]
    assert {k: v for k, v in served.items() if k[0] != "telecom"} == {
        k: v for k, v in before.items() if k[0] != "telecom"}
    assert bind_dir.target().plan(model(move_telecom)).empty


def test_unsharing_a_zone_reconfigs_once_then_reloads_and_named_serves_every_file(bind_dir):
    before = bind_dir.named.serials()
    target = bind_dir.target()
    result = apply_plan(target, target.plan(model(unshare_unicom)))
    assert result.ok, result.to_text()
    assert bind_dir.named.calls == ["status", "reconfig", f"reload {ZONE} IN bgp",
                                    f"reload {ZONE} IN unicom"]
    assert bind_dir.named.declared[("bgp", ZONE)] == {"file": f"db.bgp.{ZONE}",
                                                      "in_view": None}
    served = bind_dir.named.serials()
    assert served == bind_dir.file_serials()
    assert served[("unicom", ZONE)] > before[("unicom", ZONE)]


def test_a_new_view_is_served_after_the_one_reconfig(bind_dir):
    target = bind_dir.target()
    result = apply_plan(target, target.plan(model(add_mobile)))
    assert result.ok, result.to_text()
    assert bind_dir.named.calls.count("reconfig") == 1
    assert ("mobile", ZONE) in bind_dir.named.serials()
    assert bind_dir.named.serials() == bind_dir.file_serials()


def test_a_refused_reload_undoes_the_named_conf_step_and_named_serves_what_it_did(bind_dir):
    before_files, before_served = bind_dir.files(), bind_dir.named.serials()
    bind_dir.named.refuse.add(f"reload {ZONE} IN unicom")
    target = bind_dir.target()
    result = apply_plan(target, target.plan(model(unshare_unicom)))
    assert not result.ok and isinstance(result.error, bind.BindError), result.to_text()
    assert result.undone and not result.undo_errors, result.to_text()
    assert bind_dir.files() == before_files
    assert bind_dir.named.serials() == before_served == bind_dir.file_serials()
    assert bind_dir.named.calls.count("reconfig") == 2        # the step and its undo


def test_named_down_before_apply_installs_nothing(bind_dir):
    before = bind_dir.files()
    bind_dir.named.stop()
    target = bind_dir.target()
    plan = target.plan(model(move_telecom))
    with pytest.raises(bind.NamedDown, match="Nothing was installed"):
        apply_plan(target, plan)
    assert bind_dir.files() == before and target.commands == []


def test_named_dying_mid_apply_leaves_the_previous_files_for_its_restart(bind_dir):
    before_files, before_served = bind_dir.files(), bind_dir.named.serials()
    target = bind_dir.target()
    plan = target.plan(model(unshare_unicom))

    def kill_named(change):
        if target.commands == ["rndc reconfig", f"rndc reload {ZONE} IN bgp"]:
            bind_dir.named.stop()
    result = apply_plan(target, plan, on_step=kill_named)
    assert not result.ok and isinstance(result.error, bind.NamedDown), result.to_text()
    assert bind_dir.files() == before_files
    bind_dir.named.start()
    assert bind_dir.named.serials() == before_served
