"""The loader's bounds on hostile input, one test per limit (in process, pure or tmp files).

Size, encoding and path confinement (``dcnet.model.inputs``), the YAML walk's limits
(``dcnet.model.yamlsource``: depth, entries, string length, nodes, alias budget, loops,
tags, merge keys) and the model-level rules they feed (empty model, carrier list
overlaps, the cap on reported problems).
"""

from __future__ import annotations

import ipaddress
import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dcnet.model import ModelError, inputs, load_model, parse_model
from dcnet.model.loader import _fast_v4_network
from dcnet.model.yamlsource import Limits, YAMLSourceError, load_located
from tests.unit.model_fixtures import model_text, read_file

pytestmark = pytest.mark.unit


def problems_of(text: str, files=None):
    with pytest.raises(ModelError) as info:
        parse_model(text, source="m.yaml", read_text=read_file(files))
    return info.value.problems


# --- inputs: size, encoding, paths -------------------------------------------------------

def test_read_bounded_refuses_a_regular_file_over_the_limit_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(inputs.InputError, match="101 bytes, more than the limit of 100"):
        inputs.read_bounded(str(path), 100)
    assert inputs.read_bounded(str(path), 101) == b"x" * 101


def test_read_bounded_stops_an_endless_device_at_the_limit():
    with pytest.raises(inputs.InputError, match="more than the limit of 4096") as info:
        inputs.read_bounded("/dev/zero", 4096)
    assert info.value.line == 1


def test_read_bounded_refuses_a_directory(tmp_path):
    with pytest.raises(inputs.InputError, match="Is a directory"):
        inputs.read_bounded(str(tmp_path), 100)


@pytest.mark.parametrize(("data", "fragment", "line"), [
    (b"a: 1\nb: \xe9\n", "byte 0xe9 at offset 8", 2),
    (b"\xff\xfea\x00", "UTF-16 byte order mark", 1),
    (b"\xff\xfe\x00\x00a\x00\x00\x00", "UTF-32 byte order mark", 1),
    (b"a: 1\n\n\n\xc3", "offset 7", 4),
])
def test_decode_utf8_names_offset_and_line(data, fragment, line):
    with pytest.raises(inputs.InputError, match=fragment) as info:
        inputs.decode_utf8(data)
    assert info.value.line == line


def test_decode_utf8_drops_a_utf8_byte_order_mark():
    assert inputs.decode_utf8(b"\xef\xbb\xbfa: 1\n") == "a: 1\n"


def test_confine(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("")
    os.symlink("/etc", tmp_path / "etc")
    allowed = inputs.allowed_dirs(str(tmp_path))
    assert inputs.confine(str(tmp_path), "sub/a.txt", allowed) == str(tmp_path / "sub" / "a.txt")
    assert inputs.confine(str(tmp_path), "sub/../sub/a.txt", allowed).endswith("a.txt")
    for name in ("../x", "/etc/shadow", "etc/shadow", "", "a\0b"):
        with pytest.raises(inputs.InputError):
            inputs.confine(str(tmp_path), name, allowed)
    assert inputs.confine(str(tmp_path), "/etc/shadow", [*allowed, "/etc"]) == "/etc/shadow"


def test_allow_list_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(inputs.ALLOW_ENV, f"/srv/lists{os.pathsep}{os.pathsep}/opt/x")
    assert inputs.allowed_dirs(str(tmp_path)) == [str(tmp_path), "/srv/lists", "/opt/x"]


def test_load_model_confines_list_files_and_takes_extra_dirs(tmp_path):
    model_dir, shared = tmp_path / "m", tmp_path / "shared"
    model_dir.mkdir()
    shared.mkdir()
    (shared / "telecom.txt").write_text("192.0.2.0/26\n")
    path = model_dir / "model.yaml"
    path.write_text(model_text(lambda d: d["carriers"][0].update(
        cidrs=str(shared / "telecom.txt"))))
    with pytest.raises(ModelError, match="outside the model's directory"):
        load_model(path)
    assert load_model(path, allowed_dirs=[str(shared)]).carriers[0].cidrs


# --- the YAML walk ----------------------------------------------------------------------

DEFAULT = Limits()


def walk_error(text: str, limits: Limits = DEFAULT) -> YAMLSourceError:
    with pytest.raises(YAMLSourceError) as info:
        load_located(text, "t.yaml", limits)
    return info.value


def test_depth_limit():
    error = walk_error("a:\n  b:\n    c: [[1]]\n", Limits(max_depth=3))
    assert error.line == 3 and "nested deeper than 3 levels" in error.message
    assert error.path == ("a", "b", "c")


def test_entries_limit():
    error = walk_error("a: 1\nb: [1, 2, 3, 4]\n", Limits(max_items=3))
    assert error.line == 2 and "4 entries in one collection" in error.message
    walk_error("{a: 1, b: 2, c: 3, d: 4}\n", Limits(max_items=3))


def test_entries_limit_by_default_at_200000():
    walk_error("[" + "1," * 200_001 + "]")


def test_string_limit_applies_to_keys_and_values():
    assert "a value of 6 characters" in walk_error("k: abcdef\n", Limits(max_string=5)).message
    assert walk_error("abcdef: 1\n", Limits(max_string=5)).line == 1


def test_node_limit():
    error = walk_error("- [1, 2]\n- [3, 4]\n- [5, 6]\n", Limits(max_nodes=5))
    assert "more than 5 nodes" in error.message


def test_alias_budget_is_the_floor_or_the_written_nodes():
    laughs = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    error = walk_error(laughs, Limits(alias_floor=10))
    assert error.line == 2 and "aliases expand to more than" in error.message
    located = load_located(laughs, "t.yaml", Limits(alias_floor=104))
    assert len(located.data["c"]) == 4 and located.data["c"][0][0] == ["x"] * 4


def test_aliased_collections_are_walked_once_and_shared():
    located = load_located("a: &a {k: [1, 2]}\nb: *a\nc: *a\n", "t.yaml")
    assert located.data["b"] is located.data["c"] is located.data["a"]
    assert located.line_of(("c", "k")) == 3      # the alias's key line, not the anchor's


@pytest.mark.parametrize("text", ["a: &a [1, *a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n",
                                  "a: &a [{<<: *a}]\n"])
def test_alias_loops_are_refused(text):
    assert "alias loop" in walk_error(text).message


@pytest.mark.parametrize("text", ["a: !!set {x: null}\n", "a: !!omap [{x: 1}]\n",
                                  "a: !!python/tuple [1]\n", "a: !!python/name:os.system\n",
                                  "a: !custom x\n"])
def test_only_plain_tags(text):
    error = walk_error(text)
    assert error.line == 1


def test_bad_scalar_values_are_located():
    assert walk_error("a: 1\nb: 2001-02-30\n").line == 2


def test_merge_keys_explicit_keys_win():
    located = load_located("d: &d {port: 80, scheduler: rr}\ns: {<<: *d, port: 443}\n"
                           "t: {<<: [{x: 1}, *d], scheduler: wrr}\n", "t.yaml")
    assert located.data["s"] == {"port": 443, "scheduler": "rr"}
    assert located.data["t"] == {"x": 1, "port": 80, "scheduler": "wrr"}
    assert located.line_of(("s", "port")) == 2


def test_merge_key_needs_mappings():
    assert "merge key" in walk_error("a: {<<: [1]}\n").message


def test_models_may_share_defaults_through_merge_keys():
    text = model_text().replace("services:\n", "x_defaults: &hc {type: tcp, interval: 2}\n"
                                "services:\n", 1)
    assert "unknown field" in str(problems_of(text)[0])     # anchors must live in a field
    data = yaml.safe_load(model_text())
    data["services"][1]["health_check"] = {"type": "tcp", "interval": 2, "timeout": 1}
    text = yaml.safe_dump(data, sort_keys=False).replace(
        "health_check:\n    type: tcp", "health_check: &hc\n    type: tcp", 1)
    assert parse_model(text, source="m.yaml", read_text=read_file()).services[1]


# --- model level --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_model_names_line_one(text):
    problems = problems_of(text)
    assert len(problems) == 1 and problems[0].line == 1
    assert "the model is empty" in problems[0].message


def test_overlapping_carrier_lists_are_refused_by_validation():
    files = {"telecom.txt": "192.0.2.0/26\n", "bgp.txt": "# bgp\n\n192.0.2.32/27\n"}
    text = model_text(lambda d: d["carriers"][1].update(cidrs="bgp.txt"))
    problems = problems_of(text, files)
    assert len(problems) == 1
    p = problems[0]
    assert (p.source, p.line, p.path) == ("bgp.txt", 3, "carriers[1].cidrs")
    assert "192.0.2.32/27 of carrier 'bgp' overlaps 192.0.2.0/26 of carrier 'telecom' " \
        "(telecom.txt:1)" in p.message


def test_list_file_lines_are_never_echoed():
    files = {"telecom.txt": "192.0.2.0/26\nroot:$6$secret:19000::\n10.0.0.1/8\n"}
    problems = problems_of(model_text(), files)
    assert [(p.source, p.line) for p in problems] == [("telecom.txt", 2), ("telecom.txt", 3)]
    assert "secret" not in str(problems) and "10.0.0.1" not in str(problems)
    assert "host bits set" in problems[1].message


def test_problems_are_capped():
    text = model_text(lambda d: d.update(services=["x"] * 1500))
    problems = problems_of(text)
    assert len(problems) == 1001
    assert any(p.message.endswith("more problems not listed") for p in problems)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}/[0-9]{1,3}",
                     fullmatch=True))
def test_fast_ipv4_prefixes_agree_with_ipaddress(text):
    fast = _fast_v4_network(text)
    try:
        slow = ipaddress.ip_network(text, strict=True)
    except ValueError:
        slow = None
    assert fast is None or fast == slow
    if slow is not None and text == str(slow):
        assert fast == slow          # every canonical prefix takes the fast path
