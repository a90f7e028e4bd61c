"""The model's lvs section rules (directors, director groups, VRRP router ids), one test
per rule, each naming the field path and line."""

from __future__ import annotations

import pytest

from dcnet.model import parse_model
from tests.unit.model_fixtures import model_text, read_file
from tests.unit.test_model_rules import expect

pytestmark = pytest.mark.unit


def lvs(**section):
    return lambda d: d.update(lvs=section)


def test_groups_default_to_one_per_carrier():
    model = parse_model(model_text(lvs(vrrp_router_id_base=60)), read_text=read_file())
    groups = model.lvs.groups(model.carriers)
    assert [(g.name, g.carriers, g.virtual_router_id, g.interface) for g in groups] == [
        ("telecom", ("telecom",), 60, "ctc0"), ("bgp", ("bgp",), 61, "bgp0")]


def test_declared_groups_and_directors_read_back():
    model = parse_model(model_text(lvs(
        vrrp_interface="eth9",
        directors=[{"name": "lvs-a", "priority": 150}, {"name": "lvs-b"}],
        director_groups=[{"name": "all", "carriers": ["telecom", "bgp"], "virtual_router_id": 7,
                          "advert_int": 2}])), read_text=read_file())
    (group,) = model.lvs.groups(model.carriers)
    assert (group.carriers, group.virtual_router_id, group.interface, group.advert_int) == (
        ("telecom", "bgp"), 7, "eth9", 2)
    assert [(d.name, d.priority) for d in model.lvs.directors] == [("lvs-a", 150), ("lvs-b", 100)]


def test_group_names_an_unknown_carrier():
    expect(lvs(director_groups=[{"name": "g", "carriers": ["mobile"]}]),
           "lvs.director_groups[0].carriers[0]", "unknown carrier 'mobile'")


def test_carrier_in_two_groups():
    expect(lvs(director_groups=[{"name": "a", "carriers": ["telecom"]},
                                {"name": "b", "carriers": ["telecom", "bgp"]}]),
           "lvs.director_groups[1].carriers[0]", "already in group 'a'")


def test_duplicate_router_ids():
    expect(lvs(director_groups=[{"name": "a", "carriers": ["telecom"], "virtual_router_id": 9},
                                {"name": "b", "carriers": ["bgp"], "virtual_router_id": 9}]),
           "lvs.director_groups[1].virtual_router_id", "used by two groups")


def test_derived_router_id_above_255():
    expect(lvs(vrrp_router_id_base=255), "lvs.vrrp_router_id_base", "above 255")


def test_router_id_range():
    expect(lvs(director_groups=[{"name": "a", "carriers": ["telecom"], "virtual_router_id": 0}]),
           "lvs.director_groups[0].virtual_router_id", "between 1 and 255")


def test_duplicate_director_names():
    expect(lvs(directors=[{"name": "a"}, {"name": "a"}]), "lvs.directors[1].name",
           "duplicate director name")


def test_director_priority_range():
    expect(lvs(directors=[{"name": "a", "priority": 255}]), "lvs.directors[0].priority",
           "between 1 and 254")


def test_group_needs_carriers():
    expect(lvs(director_groups=[{"name": "a", "carriers": []}]),
           "lvs.director_groups[0].carriers", "non-empty list")


def test_unknown_group_field():
    expect(lvs(director_groups=[{"name": "a", "carriers": ["bgp"], "vrid": 3}]),
           "lvs.director_groups[0].vrid", "unknown field")
