"""netbench definitions: the schema, errors with file/line/field, and the shipped files."""

from __future__ import annotations

import textwrap

import pytest

from dcnet.netbench import definition
from dcnet.netbench.catalogue import MODE_NAMES
from dcnet.netbench.definition import DefinitionError

pytestmark = pytest.mark.unit

GOOD = textwrap.dedent("""\
    netbench: 1
    name: small
    baseline: veth
    repeats: 5
    modes: [veth, bridge]
    tests:
      - name: tcp-1
        kind: tcp
        streams: 1
      - name: lat
        kind: latency
        protocol: udp
    """)


def errors_of(text: str, source: str = "bench.yaml") -> list[str]:
    with pytest.raises(DefinitionError) as info:
        definition.loads(text, source)
    return [str(problem) for problem in info.value.problems]


def test_valid_definition_and_defaults():
    loaded = definition.loads(GOOD, "bench.yaml")
    assert loaded.modes == ("veth", "bridge")
    assert loaded.baseline == "veth"
    assert loaded.warmup_rounds == 1 and loaded.rounds == 6
    tcp = loaded.test("tcp-1")
    assert (tcp.kind, tcp.duration, tcp.omit, tcp.length) == ("tcp", 2.0, 1, None)
    assert loaded.test("lat").protocol == "udp"
    assert loaded.to_dict()["tests"][1]["name"] == "lat"
    assert loaded.to_dict()["netbench"] == 1


def test_wrong_field_value_names_file_line_and_field():
    text = GOOD.replace("streams: 1", "streams: 0")
    assert errors_of(text) == ["bench.yaml:9: tests[0].streams: must be between 1 and 128, "
                               "got 0"]


def test_field_of_another_kind_is_unknown():
    text = GOOD.replace("protocol: udp", "protocol: udp\n    streams: 4")
    (problem,) = errors_of(text)
    assert problem.startswith("bench.yaml:13: tests[1].streams: unknown field")


def test_rr_kind_takes_protocol_and_message_size_but_keeps_no_raw_samples():
    text = GOOD + "  - {name: rr, kind: rr, protocol: udp, message_size: 200}\n"
    rr = definition.loads(text, "bench.yaml").test("rr")
    assert (rr.kind, rr.protocol, rr.message_size, rr.keep_raw) == ("rr", "udp", 200, False)
    (problem,) = errors_of(text.replace("message_size: 200}", "keep_raw: true}"))
    assert problem.startswith("bench.yaml:13: tests[2].keep_raw: unknown field")


def test_every_problem_is_reported_at_once():
    text = textwrap.dedent("""\
        netbench: 1
        name: Bad Name
        baseline: macvlan
        modes: [veth, warp-drive, veth]
        tests:
          - {name: t, kind: quantum}
          - {name: t2, kind: udp, bitrate: fast}
        colour: blue
        """)
    problems = errors_of(text, "x.yaml")
    assert any(p.startswith("x.yaml:2: name: 'Bad Name' is not valid") for p in problems)
    assert any(p.startswith("x.yaml:4: modes[1]: unknown mode 'warp-drive'") for p in problems)
    assert "x.yaml:4: modes[2]: duplicate mode 'veth'" in problems
    assert any(p.startswith("x.yaml:6: tests[0].kind: unknown test kind 'quantum'")
               for p in problems)
    assert any(p.startswith("x.yaml:7: tests[1].bitrate: 'fast' is not a bitrate")
               for p in problems)
    assert any(p.startswith("x.yaml:8: colour: unknown field") for p in problems)
    assert any("baseline 'macvlan' is not one of the definition's modes" in p
               for p in problems)


def test_missing_sections_and_version():
    problems = errors_of("netbench: 2\nname: x\n")
    assert "bench.yaml:1: netbench: unsupported definition format 2 (this netbench reads 1)" \
        in problems
    for field in ("modes", "baseline", "tests"):
        assert f"bench.yaml:1: missing required field '{field}'" in problems


def test_duplicate_test_names_and_empty_lists():
    text = GOOD.replace("name: lat", "name: tcp-1")
    assert errors_of(text) == ["bench.yaml:10: tests[1].name: duplicate test 'tcp-1'"]
    problems = errors_of(GOOD.replace("modes: [veth, bridge]", "modes: []"))
    assert "bench.yaml:5: modes: at least one mode is required" in problems


def test_yaml_syntax_error_names_the_line():
    (problem,) = errors_of("netbench: 1\nmodes: [veth\n")
    assert problem.startswith("bench.yaml:")
    assert "invalid YAML" in problem


def test_nothing_is_executed():
    # A YAML tag that would construct a Python object is refused, not executed.
    text = GOOD.replace("name: small", "name: !!python/object/apply:os.system ['true']")
    (problem,) = errors_of(text)
    assert problem.startswith("bench.yaml:2:")


def test_load_missing_file():
    with pytest.raises(DefinitionError, match=r"nope\.yaml: cannot read"):
        definition.load("/nonexistent/nope.yaml")


@pytest.mark.parametrize("name", ["modes", "quick", "quick6", "dualstack"])
def test_shipped_definitions_are_valid(name):
    loaded = definition.load(definition.resolve(name))
    assert loaded.name == name
    assert set(loaded.modes) <= MODE_NAMES
    assert loaded.baseline == "veth"


def test_default_definition_covers_every_mode_and_kind_with_five_repeats():
    loaded = definition.load(definition.builtin("modes"))
    assert set(loaded.modes) == MODE_NAMES
    assert {t.kind for t in loaded.tests} == set(definition.KINDS)
    assert loaded.repeats >= 5 and loaded.warmup_rounds >= 1
    assert {t.streams for t in loaded.tests if t.kind == "tcp"} == {1, 4}


def test_resolve_keeps_paths():
    assert definition.resolve("./x.yaml") == "./x.yaml"
    assert definition.resolve("quick").endswith("definitions/quick.yaml")
