"""The rndc contract: what DNSTarget relies on from named behind ``status/reconfig/reload``.

Parametrised over ``fake`` (:class:`dcnet.dns.fake.FakeRndc`, pure, marker unit) and
``real`` (named in a lab namespace, driven by :class:`dcnet.dns.bind.Rndc`, marker
netns). Each test renders a BIND directory from a small model, starts "named" on it,
changes the files and issues rndc commands, then asserts on what named serves: the SOA
serial per zone and view (the fake's :meth:`~dcnet.dns.fake.FakeRndc.serial`, the real
one's ``rndc zonestatus ZONE IN VIEW``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcnet.dns import bind
from dcnet.dns.fake import FakeRndc
from dcnet.dns.installed import read_directory
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions
from dcnet.lab.dns_lab import make_rndc_key, start_named
from dcnet.model import parse_model
from dcnet.sysio import proc
from tests.unit.model_fixtures import model_text, read_file

ZONE = "elb.internal"
FILES = {"telecom.txt": "192.0.2.0/26\n", "unicom.txt": "192.0.2.64/26\n"}


def telecom_moves(data):
    data["services"][0]["vips"]["telecom"] = "198.51.100.12"


def with_unicom(data):
    """A unicom view whose zone equals the default's: the default view gets ``in-view``."""
    data["carriers"].insert(1, {"name": "unicom", "uplink": "cuc0", "gateway": "198.51.100.65",
                                "table": 102, "vip_ranges": ["198.51.100.64/26"],
                                "cidrs": "unicom.txt"})


def model(*mutations):
    def mutate(data):
        for m in mutations:
            m(data)
    return parse_model(model_text(mutate), read_text=read_file(FILES))


class Named:
    """One side of the contract: ``rndc`` (what DNSTarget calls), ``serial``, ``stop``."""

    def __init__(self, directory: Path, key: str):
        self.directory = directory
        self.key = key

    def render(self, m) -> None:
        render_to_directory(m, ServerOptions(str(self.directory), key_file=self.key),
                            force=True, check=False)

    def file_serials(self) -> dict:
        """(view, zone) -> the serial the installed files say each view serves."""
        config = read_directory(str(self.directory))
        out = {}
        for key, decl in config.zones.items():
            own = (decl["in_view"], key[1]) if decl["in_view"] else key
            out[key] = config.zone_files[own].serial
        return out

    def served(self) -> dict:
        return {key: self.serial(key[1], key[0]) for key in self.file_serials()}


class FakeNamed(Named):
    def start(self) -> None:
        self.rndc = FakeRndc(str(self.directory))

    def serial(self, zone: str, view: str) -> int | None:
        return self.rndc.serial(zone, view)

    def stop(self) -> None:
        self.rndc.stop()


class RealNamed(Named):
    def __init__(self, directory: Path, key: str, lab):
        super().__init__(directory, key)
        self.lab = lab
        self.rndc = bind.Rndc(key, netns=lab.netns("dns"))

    def start(self) -> None:
        start_named(self.lab, "dns", str(self.directory), self.rndc)

    def serial(self, zone: str, view: str) -> int | None:
        try:
            text = self.rndc.run("zonestatus", zone, "IN", view)
        except bind.NamedDown:
            raise
        except bind.BindError as exc:
            if "not found" in str(exc):
                return None
            raise
        found = re.search(r"^serial: (\d+)$", text, re.M)
        assert found, text
        return int(found.group(1))

    def stop(self) -> None:
        proc.stop(self.lab.process("named"))


@pytest.fixture(params=[pytest.param("fake", marks=pytest.mark.unit),
                        pytest.param("real", marks=pytest.mark.netns)])
def named(request, tmp_path) -> Named:
    """named started on a directory rendered from ``model()`` (telecom and bgp views)."""
    directory = tmp_path / "bind"
    if request.param == "fake":
        side: Named = FakeNamed(directory, str(tmp_path / "rndc.key"))   # never read
    else:
        lab = request.getfixturevalue("lab_factory")({"hosts": ["dns"], "links": []})
        side = RealNamed(directory, make_rndc_key(str(directory)), lab)
    side.render(model())
    side.start()
    return side


def test_started_named_serves_every_zone_at_its_file_serial(named):
    assert "server is up and running" in named.rndc.status()
    assert set(named.file_serials()) == {("telecom", ZONE), ("bgp", ZONE)}
    assert named.served() == named.file_serials()


def test_reconfig_keeps_a_changed_zone_and_reload_loads_it_in_that_view_only(named):
    before = named.served()
    named.render(model(telecom_moves))
    after = named.file_serials()
    assert after[("telecom", ZONE)] > before[("telecom", ZONE)]
    named.rndc.reconfig()
    assert named.served() == before             # reconfig does not reload zone files
    named.rndc.reload(ZONE, "telecom")
    assert named.served() == after
    assert after[("bgp", ZONE)] == before[("bgp", ZONE)]


def test_reconfig_loads_a_new_view_and_an_in_view_zone_serves_the_shared_one(named):
    named.render(model(with_unicom))
    files = named.file_serials()
    assert set(files) == {("telecom", ZONE), ("unicom", ZONE), ("bgp", ZONE)}
    assert named.serial(ZONE, "unicom") is None                 # not configured yet
    named.rndc.reconfig()
    assert named.served() == files
    assert named.serial(ZONE, "bgp") == named.serial(ZONE, "unicom")


def test_a_view_dropped_by_reconfig_is_no_longer_served(named):
    named.render(model(with_unicom))
    named.rndc.reconfig()
    named.render(model())
    named.rndc.reconfig()
    assert named.serial(ZONE, "unicom") is None
    assert named.served() == named.file_serials()


def test_reload_of_a_zone_named_does_not_have_is_refused_not_down(named):
    for zone, view in ((ZONE, "no-such-view"), ("no.such.zone", "telecom")):
        with pytest.raises(bind.BindError, match="not found") as caught:
            named.rndc.reload(zone, view)
        assert not isinstance(caught.value, bind.NamedDown)
    assert "server is up and running" in named.rndc.status()


def test_every_call_to_a_stopped_named_raises_named_down(named):
    named.stop()
    with pytest.raises(bind.NamedDown):
        named.rndc.status()
    with pytest.raises(bind.NamedDown):
        named.rndc.reconfig()
    with pytest.raises(bind.NamedDown):
        named.rndc.reload(ZONE, "telecom")
