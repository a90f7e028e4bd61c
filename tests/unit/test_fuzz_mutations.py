"""Grammar-aware mutations of the example service model and of a CNI config.

Shared by the property tests (``test_fuzz_model``, ``test_fuzz_cni``) and the long run
(``bench/fuzz.py``): hypothesis strategies that take a valid document apart along its
grammar (pick a field path, then replace, delete, retype, nest, alias or duplicate it)
and, for the text, YAML- or JSON-level edits (truncation, stray bytes, anchors, tabs,
byte order marks). The tests at the bottom check the mutators themselves.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "dcnet" / "examples"
EXAMPLE_MODEL = EXAMPLES / "elb.yaml"
EXAMPLE_TEXT = EXAMPLE_MODEL.read_text()
EXAMPLE_DATA = yaml.safe_load(EXAMPLE_TEXT)
EXAMPLE_FILES = {f"carriers/{p.name}": p.read_text() for p in (EXAMPLES / "carriers").iterdir()}

CNI_BASE = {
    "cniVersion": "1.1.0", "name": "podnet", "type": "dcnet", "mode": "host-gw",
    "bridge": "dcnet0", "mtu": 1450, "clusterCIDR": "10.244.0.0/16", "subnetLen": 24,
    "dataDir": "/nonexistent/dcnet-fuzz/data", "runDir": "/nonexistent/dcnet-fuzz/run",
    "store": {"type": "file", "path": "/nonexistent/dcnet-fuzz/store"},
    "runtimeConfig": {"ips": ["10.244.1.5/24"], "mac": "02:00:00:00:00:01"},
}
CNI_MACVLAN = {
    "cniVersion": "1.0.0", "name": "dcnet-macvlan", "type": "dcnet", "mode": "macvlan",
    "master": "eth0", "macvlanMode": "bridge", "mtu": 1500,
    "stateDir": "/nonexistent/dcnet-fuzz/dhcp", "agentSocket": "/nonexistent/agent.sock",
    "hostShim": {"name": "shim0", "address": "192.0.2.9/32"},
    "dhcp": {"clientID": "pod", "hostname": True},
}

# Values an attacker or a careless operator puts anywhere.
HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=False), st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "4294967296", "1e309", "0x10", "0o7", "0b1",
                     "null", "~", "yes", "no", "on", "2001-13-45", "12:30:45", "\u202e",
                     "../../../../etc/shadow", "/etc/shadow", "/dev/zero", "a" * 5000,
                     "9" * 5000, "198.51.100.10", "198.51.100.0/26", "::1", "fe80::1%eth0",
                     "10.0.0.1/33", "256.1.1.1", "job.x_service.y", "{service}", "%s%n",
                     "ctc0 ", "\t", "\x00", "\udcff"]),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def paths_of(data: object, prefix: tuple = ()) -> list[tuple]:
    """Every path into ``data`` (mapping keys and list indexes), the root included."""
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += paths_of(value, (*prefix, i))
    return out


def _parent(data: object, path: tuple):
    for part in path[:-1]:
        data = data[part]
    return data


def mutate_data(data: object, path: tuple, action: str, value: object) -> object:
    """A copy of ``data`` with ``action`` applied at ``path`` (replace, delete, add an
    unknown key, duplicate a list item, nest the value, wrap it in a list)."""
    data = copy.deepcopy(data)
    if not path:
        return value if action == "replace" else data
    parent, last = _parent(data, path), path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "unknown_key" and isinstance(parent, dict):
        parent[f"x_{last}_extra"] = value
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif action == "nest":
        parent[last] = {"nested": [parent[last], value]}
    elif action == "listify":
        parent[last] = [parent[last]] * 3
    return data


@st.composite
def mutated_data(draw, base: object, max_mutations: int = 3) -> object:
    """``base`` after one to ``max_mutations`` grammar-aware mutations."""
    data = base
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(paths_of(data)))
        action = draw(st.sampled_from(["replace", "replace", "delete", "unknown_key",
                                       "duplicate", "nest", "listify"]))
        data = mutate_data(data, path, action, draw(HOSTILE_VALUES))
    return data


TEXT_EDITS = ["truncate", "insert", "tab", "bom", "anchor", "dup_line", "bytes", "indent"]


def edit_text(text: str, edit: str, at: int, junk: str) -> bytes:
    """One YAML-level edit of ``text`` at offset ``at`` (taken modulo its length)."""
    at = at % (len(text) + 1)
    lines = text.splitlines(keepends=True)
    line = at % max(len(lines), 1)
    if edit == "truncate":
        return text[:at].encode()
    if edit == "insert":
        return (text[:at] + junk + text[at:]).encode()
    if edit == "tab":
        return (text[:at] + "\t" + text[at:]).encode()
    if edit == "bom":
        return "\ufeff".encode() + text.encode() if at % 2 else text.encode("utf-16")
    if edit == "anchor":    # an anchor on one line, an alias of it on another
        lines[line] = lines[line].replace(": ", ": &x ", 1)
        return ("".join(lines) + f"extra: [*x, *x, *x]\n{junk}: *x\n").encode()
    if edit == "dup_line":
        lines.insert(line, lines[line] if lines else "")
        return "".join(lines).encode()
    if edit == "bytes":
        raw = text.encode()
        return raw[:at] + bytes([0x80 + at % 128, 0, 0xff]) + raw[at:]
    lines[line] = " " * (at % 7) + lines[line] if lines else ""
    return "".join(lines).encode()


def model_texts() -> st.SearchStrategy[bytes]:
    """Mutated example models: data-level mutations dumped as YAML, then maybe a text edit."""
    data_text = mutated_data(EXAMPLE_DATA).map(
        lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True))
    edited = st.builds(edit_text, st.one_of(st.just(EXAMPLE_TEXT), data_text),
                       st.sampled_from(TEXT_EDITS), st.integers(0, 10**6), st.text(max_size=12))
    return st.one_of(data_text.map(lambda t: t.encode("utf-8", "surrogatepass")), edited)


def cni_inputs() -> st.SearchStrategy[bytes]:
    """Mutated CNI configs (host-gw and macvlan, alone or in a conflist), as stdin bytes."""
    conf = st.one_of(mutated_data(CNI_BASE), mutated_data(CNI_MACVLAN))
    wrapped = conf.map(lambda c: {"cniVersion": "1.1.0", "name": "list", "plugins": [c]}
                       if isinstance(c, dict) and c.get("mtu") == 1450 else c)
    as_json = wrapped.map(lambda c: json.dumps(c).encode())
    raw_edit = st.builds(lambda b, at, junk: b[:at % (len(b) + 1)] + junk,
                         as_json, st.integers(0, 10**4), st.binary(max_size=6))
    return st.one_of(as_json, as_json, raw_edit)


# --- the mutators themselves ----------------------------------------------------------

def test_every_path_of_the_example_can_be_mutated():
    for path in paths_of(EXAMPLE_DATA)[1:]:
        assert mutate_data(EXAMPLE_DATA, path, "replace", "X") != EXAMPLE_DATA
    assert mutate_data(EXAMPLE_DATA, ("services", 0), "delete", None)["services"] \
        == EXAMPLE_DATA["services"][1:]


@pytest.mark.parametrize("edit", TEXT_EDITS)
def test_every_text_edit_changes_the_example(edit):
    assert edit_text(EXAMPLE_TEXT, edit, 1234, "junk") != EXAMPLE_TEXT.encode()
