"""The event-built YAML path (``dcnet.model.yamlevents``) against the composed one.

``load_located`` builds plain documents from libyaml's events and composes PyYAML's node
tree for the rest (``load_composed``, the path every document took before). These tests
hold both to the same data, the same line of every field path and the same error text,
on the repository's own YAML files, the hostile corpus, documents made at each bound of
the limits, and generated ones; and they check that the event path is really taken for
plain documents (else the comparison would prove nothing).
"""

from __future__ import annotations

import copy
import glob
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcnet.model import ModelError, parse_model, yamlevents
from dcnet.model import loader as model_loader
from dcnet.model.yamlsource import (
    DEFAULT_LIMITS,
    Limits,
    YAMLSourceError,
    load_composed,
    load_located,
)
from tests.unit.model_fixtures import model_text, read_file

pytestmark = pytest.mark.unit
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def outcome(load, text: str, limits: Limits = DEFAULT_LIMITS):
    """(data, lines) or the error's text, with its line and path."""
    try:
        located = load(text, "m.yaml", limits)
    except YAMLSourceError as exc:
        return ("error", str(exc), exc.line, exc.path)
    return ("data", located.data, dict(located.lines))


def same(text: str, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Both paths agree on ``text``; returns whether the event path took it."""
    assert outcome(load_located, text, limits) == outcome(load_composed, text, limits)
    try:
        yamlevents.build(text, limits)
    except yamlevents.Unsupported:
        return False
    return True


def repo_yaml() -> list[str]:
    found = []
    for pattern in ("examples/**/*.yaml", "dcnet/**/*.yaml", "tests/data/**/*.yaml",
                    "deploy/**/*.yaml"):
        found += glob.glob(os.path.join(ROOT, pattern), recursive=True)
    return sorted(found)


def test_the_repository_files_load_the_same_and_plain_models_take_the_event_path():
    taken = set()
    for path in repo_yaml():
        with open(path, encoding="utf-8", errors="replace") as fh:
            if same(fh.read()):
                taken.add(os.path.relpath(path, ROOT))
    assert {"examples/elb.yaml", "dcnet/examples/elb.yaml"} <= taken
    assert "tests/data/hostile/billion_laughs.yaml" not in taken   # aliases: composed


def test_the_model_fixture_loads_the_same_through_the_event_path():
    text = model_text()
    assert same(text)
    assert parse_model(text, "m.yaml", read_file()) == _composed(parse_model)(
        text, "m.yaml", read_file())


def _composed(function):
    """``function`` run with the loader on the composed path (as before)."""
    def run(*args):
        original = model_loader.load_located
        model_loader.load_located = load_composed
        try:
            return function(*args)
        finally:
            model_loader.load_located = original
    return run


def model_problems(text: str) -> list:
    try:
        parse_model(text, "m.yaml", read_file())
    except ModelError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize("needle", ["port: 80", "weight: 1", "address:"])
def test_validation_problems_name_the_same_lines_on_both_paths(needle):
    """The event path records lines only when a problem asks for one: same lines."""
    text = model_text().replace(needle, needle.replace(":", "x:"), 1)
    problems = model_problems(text)
    assert problems and any(":" in p for p in problems)
    assert problems == _composed(model_problems)(text)


HOSTILE = [
    "",
    "# only a comment\n",
    "---\n",
    "a: 1\na: 2\n",                               # duplicate key
    "a: 1\nb:\n  c: 1\n  c: 2\n",
    "a: &x [1, 2]\nb: *x\n",                      # anchor and alias
    "a: &x 1\n",                                  # an anchor no alias uses
    "a: *nowhere\n",                              # undefined alias
    "a: &x 1\nb: &x 2\n",                         # duplicate anchor
    "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n",
    "c:\n  <<: {x: 1}\n  x: 3\n",
    "c:\n  <<: [{x: 1}, {y: 2}]\n",
    "c:\n  <<: 1\n",
    "a: !!int '80'\n",
    "a: !!str 80\n",
    "a: ! 80\n",
    "a: !custom x\n",
    "a: !!python/object/apply:os.system ['true']\n",
    "!!map {a: 1}\n",
    "!!seq [1]\n",
    "!!set {a}\n",
    "a: !!binary aGk=\n",
    "a: !!seq x\n",
    "a: !!int\n",                                 # empty: the constructor's IndexError
    "a: !!float ''\n",
    "a: !!omap x\n",
    "1: a\ntrue: b\n~: c\n1.5: d\n",                # keys that are not strings
    "? [k]\n: v\n",
    "? {k: 1}\n: v\n",
    "a: 2001-12-14\nb: 2001-13-14\n",
    "a: 0x1F\nb: 0o17\nc: 1_000\nd: 1:30\ne: .inf\nf: -.NaN\ng: yes\nh: ~\ni: null\n",
    "a: =\n",
    "a: <<\n",
    "a: 1\n---\nb: 2\n",                          # two documents
    "a: 1\n--- [\n",
    "a: 1\na: 2\nb: [\n",                         # a duplicate key, then a syntax error
    "a:\n\t- 1\n",                                # a tab
    "a: \x00\n",
    "a: 'x\n",
    "[1, 2, [3, [4, [5]]]]\n",
    "- a\n- - b\n  - c\n- {d: e}\n",
    "plain scalar\n",
    "a: |\n  multi\n  line\n",
    "? |\n  a key\n  on lines\n: 1\nb: 2\n",       # a key's line is where it starts
    "- |\n  x\n  y\n- z\n- [\n  1]\n",
    '"a\n  b": 1\n',
    "a: >\n  folded\n  text\n",
    '"\\ud800"\n',
    "a: " + "x" * 5000 + "\n",
    "[" * 40 + "]" * 40 + "\n",
    "[" * 1200 + "]" * 1200 + "\n",
    "\ufeffa: 1\n",
    "%YAML 1.1\n---\na: 1\n",
    "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_documents_give_the_same_data_or_error(text):
    same(text)


def test_plain_documents_take_the_event_path():
    for text in ("", "---\n", "a: 1\n", "a: !!str 80\n", "a: ! 80\n", "1: a\n" [3:],
                 "- a\n- - b\n  - c\n- {d: e}\n", "a: 0x1F\nb: .inf\nc: ~\nd: 2001-12-14\n"):
        assert same(text), text
    for text in ("a: 1\na: 2\n", "a: &x 1\n", "1: a\n", "a: 1\n---\nb: 2\n", "a: [\n"):
        assert not same(text), text


def nested(depth: int) -> str:
    return "a:\n" + "".join("  " * i + "- b:\n" for i in range(1, depth)) + \
        "  " * depth + "c: 1\n"


@pytest.mark.parametrize("depth", range(1, 8))
def test_the_depth_bound_is_met_alike(depth):
    for max_depth in range(1, 10):
        same(nested(depth), Limits(max_depth=max_depth))


def test_the_entry_and_string_bounds_are_met_alike():
    text = "a: [1, 2, 3]\nb: {x: 1, y: 22, z: 333}\nccc: dddd\n"
    for bound in range(0, 6):
        same(text, Limits(max_items=bound))
        same(text, Limits(max_string=bound))


def test_the_node_bound_is_counted_as_the_walk_counts_it():
    """The walk checks the count at each collection, with a mapping's keys added after
    its values: every bound from 1 to past the document's size gives the same answer."""
    text = "a: {b: [1, {c: 2}], d: 3}\ne: [[4], {f: 5, g: [6, 7]}]\nh: 8\n"
    outcomes = set()
    for bound in range(1, 30):
        same(text, Limits(max_nodes=bound))
        outcomes.add(outcome(load_located, text, Limits(max_nodes=bound))[0])
    assert outcomes == {"error", "data"}


FRAGMENTS = ["a", "b", "1", "x: 1", "- 1", "&x", "*x", "<<: ", "!!str", "!t", "[", "]",
             "{", "}", ",", ": ", "? ", "\n", "\n  ", "\n- ", "'q'", '"d"', "~", "true",
             "2001-12-14", "0x10", "#c", "---\n", "|\n  t", "\t"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=24),
       st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=40))
def test_generated_documents_give_the_same_data_or_error(parts, depth, nodes):
    same("".join(parts), Limits(max_depth=depth, max_items=5, max_string=8, max_nodes=nodes))


@pytest.mark.parametrize("text", ["a: 1\nb: !!int\n", "a: 1\nb: !!float ''\n"])
def test_an_empty_number_is_a_located_error_not_a_crash(text):
    """PyYAML's int and float constructors index the empty text (IndexError, which
    escaped as a traceback from `elbctl validate` on both paths before)."""
    with pytest.raises(YAMLSourceError) as info:
        load_located(text, "m.yaml")
    assert (info.value.line, info.value.path) == (2, ("b",))
    assert info.value.message.endswith("value: it is empty")


def test_the_services_hook_replaces_only_the_top_mappings_service_items():
    text = ("services:\n- {a: 1}\n- plain\n- [x]\n- {b: {services: [{c: 2}]}}\n"
            "other: [{d: 3}]\n")
    seen = []

    def hook(index, item):
        seen.append((index, item))
        return ("read", index)
    data = yamlevents.build(text, Limits(), services=hook)
    assert data == {"services": [("read", 0), "plain", ["x"], ("read", 3)],
                    "other": [{"d": 3}]}
    assert seen == [(0, {"a": 1}), (3, {"b": {"services": [{"c": 2}]}})]
    assert yamlevents.build("- {services: [{a: 1}]}\n", Limits(), services=hook) == [
        {"services": [{"a": 1}]}]
    assert len(seen) == 2


def test_services_with_equal_ports_or_checks_share_them_and_only_equal_ones():
    def mutate(data):
        first, second = data["services"][0], data["services"][1]
        second["ports"] = copy.deepcopy(first["ports"])
        second["health_check"] = dict(first["health_check"], interval=2.0)  # and 2
    text = model_text(mutate)
    for load in (load_located, load_composed):
        original = model_loader.load_located
        model_loader.load_located = load
        try:
            model = parse_model(text, read_text=read_file())
        finally:
            model_loader.load_located = original
        first, second = model.services[0], model.services[1]
        assert first.ports is second.ports
        assert first.health_check is second.health_check   # 2 and 2.0: read as 2.0
        assert repr(second.health_check.interval) == "2.0"
    other = parse_model(text.replace("timeout: 1", "timeout: 1.5", 1), read_text=read_file())
    assert other.services[0].health_check != other.services[1].health_check
    assert other.services[0].ports is other.services[1].ports


def test_a_long_ascii_text_read_in_pieces_gives_the_same_data_and_lines():
    # libyaml reads a stream piece by piece: values and lines across the pieces' edges
    text = "".join(f"k{i}: [{i}, 'quoted {i}', {{a: 2.5, b: null}}]\n"
                   f"s{i}: |\n  block {i}\n  line two\n" for i in range(3000))
    assert len(text) > 200_000 and text.isascii()
    assert same(text)
    pieces = yamlevents._Pieces(text)
    assert "".join(iter(lambda: pieces.read(4096), "")) == text
    whole = text + "x: \u00e9\n"          # not ASCII: parsed whole, as before
    assert yamlevents.build(whole, DEFAULT_LIMITS) == {
        **yamlevents.build(text, DEFAULT_LIMITS), "x": "\u00e9"}
