"""The loader's ``spill``: each service read and checked alone goes to the caller as the
YAML is read, and the model returned holds it without its real servers; the first
loader child packs those (``dcnet.model.pieces.Packer``) into what ``pack`` makes of the
whole model, and a model with a problem gives the same errors as without ``spill``."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from dcnet.model import ModelError, parse_model
from dcnet.model import pieces as model_pieces
from tests.unit.model_fixtures import model_text, read_file

pytestmark = pytest.mark.unit


def many(count: int):
    """``count`` services like the fixture's second, each with two real servers, one
    service with no real server."""
    def mutate(data):
        template = data["services"][1]
        data["services"][1:] = [
            {**copy.deepcopy(template), "job": template["job"].replace("checkout", f"checkout{i}"),
             "vips": {"bgp": f"203.0.113.{20 + i}"},
             "real_servers": [{"address": f"10.1.{i}.1"}, {"address": f"10.1.{i}.2",
                                                           "weight": 3}][:i % 3]}
            for i in range(count)]
    return mutate


def problems(text: str, spill=None) -> list[str]:
    try:
        parse_model(text, "m.yaml", read_file(), spill=spill)
    except ModelError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize("per_piece", [1, 2, 3, 1000])
def test_a_model_packed_as_read_is_pack_models_pieces_byte_for_byte(per_piece):
    text = model_text(many(7))
    assert "&" not in text          # no anchor: the event path
    whole = parse_model(text, "m.yaml", read_file())
    packer = model_pieces.Packer(per_piece)
    light = parse_model(text, "m.yaml", read_file(), spill=packer.spill)
    assert [s.real_servers for s in light.services] == [()] * 8
    assert light == dataclasses.replace(whole, services=tuple(
        dataclasses.replace(s, real_servers=()) for s in whole.services))
    assert any(s.real_servers for s in whole.services)
    pieces = packer.pieces(light)
    assert pieces == model_pieces.pack(whole, per_piece)
    assert model_pieces.unpack(pieces) == whole


def test_a_model_without_services_packs_as_before():
    text = model_text(lambda data: data.pop("services"))
    packer = model_pieces.Packer()
    model = parse_model(text, "m.yaml", read_file(), spill=packer.spill)
    assert model.services == ()
    assert packer.pieces(model) == model_pieces.pack(model)


@pytest.mark.parametrize("anchor", ["first", "last"])
def test_a_model_the_composed_path_reads_is_packed_whole(anchor):
    """An anchor makes the composed path read the model again (after the event pass
    spilled the services before it, with ``last``): nothing spilled is used."""
    text = model_text(many(4))
    old = "scheduler: rr"
    at = text.rindex(old) if anchor == "last" else text.index("scheduler: wrr")
    text = text[:at] + "scheduler: &s " + text[at + len("scheduler: "):]
    spilled, packer = [], model_pieces.Packer(2)

    def spill(service):
        spilled.append(service)
        packer.spill(service)
    model = parse_model(text, "m.yaml", read_file(), spill=spill)
    assert len(spilled) == (0 if anchor == "first" else 4)
    assert [len(s.real_servers) for s in model.services] == [2, 0, 1, 2, 0]
    assert packer.pieces(model) == model_pieces.pack(model, 2)


def test_a_partly_spilled_model_is_refused():
    packer = model_pieces.Packer()
    model = parse_model(model_text(), "m.yaml", read_file(), spill=packer.spill)
    packer.jobs.append(packer.jobs[0])
    with pytest.raises(ValueError, match="partly spilled"):
        packer.pieces(model)


def _dual_stack(data):   # an IPv6 real server behind an IPv4-only NAT service
    data["services"][0]["real_servers"][1]["address"] = "2001:db8::2"


@pytest.mark.parametrize("mutate", [
    lambda d: d["services"][0]["real_servers"].append({"address": "10.0.0.1"}),
    lambda d: d["services"][1]["real_servers"][0].update(port=8443),
    lambda d: (d["services"][0]["ports"].append({"port": 81, "forward": "nat"}),
               d["services"][0]["real_servers"][0].update(port=81)),
    _dual_stack,
    lambda d: d["services"][1]["real_servers"][0].update(address="bad"),
    lambda d: d["services"].append(copy.deepcopy(d["services"][1])),
    lambda d: d["services"][1]["vips"].update(bgp="198.51.100.11"),
], ids=["duplicate", "dr-port", "multi-port", "family", "address", "same-service", "vip"])
def test_problems_are_the_same_with_spill(mutate):
    text = model_text(mutate)
    assert "&" not in text          # no anchor: the event path
    expected = problems(text)
    assert expected
    spilled = []
    assert problems(text, spilled.append) == expected
    assert spilled          # the services without a problem of their own were spilled
