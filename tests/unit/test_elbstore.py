"""The pure parts of the ELB state in etcd: key layout, stored documents, model bundles,
the effective model (the file registry's merge), the desired state an agent folds
events into, and the ACL grants."""

from __future__ import annotations

import os

import pytest
import yaml

from dcnet.elbstore import acl
from dcnet.elbstore.bundle import collect, load_files
from dcnet.elbstore.desired import DesiredState
from dcnet.elbstore.effective import effective_model
from dcnet.elbstore.keys import KeyNameError, Keys
from dcnet.elbstore.records import (
    ModelRevision,
    RecordError,
    Status,
    decode_current,
    decode_entry,
    encode_current,
    encode_entry,
)
from dcnet.lvs import state as lvs_state
from dcnet.lvs.layout import layouts
from dcnet.model import ModelError, parse_model
from dcnet.sysio.etcd import Event, KeyValue
from tests.unit.model_fixtures import BASE, FILES, JOB_A, JOB_B, model_text, read_file

pytestmark = pytest.mark.unit

KEYS = Keys()


def the_model():
    return parse_model(model_text(), source="m.yaml", read_text=read_file())


# ---------------------------------------------------------------- keys


def test_key_layout():
    assert KEYS.current == "/elb/desired/current"
    assert KEYS.model(7) == "/elb/desired/models/0000000007"
    assert KEYS.backend(JOB_A, "10.0.0.9:8080") == f"/elb/desired/backends/{JOB_A}/10.0.0.9:8080"
    assert KEYS.status("dir-1") == "/elb/status/dir-1/state"
    assert all(k.startswith(KEYS.desired) for k in (KEYS.current, KEYS.model(1),
                                                    KEYS.backend(JOB_A, "10.0.0.1")))
    assert not KEYS.status("d").startswith(KEYS.desired)     # agents never see status writes


def test_keys_parse_back():
    assert KEYS.parse(KEYS.current) == ("current",)
    assert KEYS.parse(KEYS.model(12)) == ("model", 12)
    assert KEYS.parse(KEYS.backend(JOB_A, "[2001:db8::1]:80")) == \
        ("backend", JOB_A, "[2001:db8::1]:80")
    assert KEYS.parse(KEYS.status("d1")) == ("status", "d1")
    assert KEYS.parse("/elb/desired/models/x")[0] == "other"


@pytest.mark.parametrize("bad", ["", "Dir", "a/b", "-x", "x" * 64])
def test_bad_director_names_are_refused(bad):
    with pytest.raises(KeyNameError, match="director name"):
        KEYS.status(bad)


def test_a_service_key_needs_a_jobname():
    with pytest.raises(KeyNameError, match="service 'web'"):
        KEYS.service_backends("web")
    with pytest.raises(KeyNameError):
        KEYS.model(0)


# ---------------------------------------------------------------- records


def record(revision=1, files=None, **meta):
    files = files or {"m.yaml": model_text(), **FILES}
    docs = [layout.to_json() for layout in layouts(the_model())]
    return ModelRevision(revision, files, "m.yaml", docs, 30, **meta)


def test_model_revision_round_trip_and_digest():
    r = record(3, pushed_by="ops@h", comment="first", pushed_at=5.0)
    back = ModelRevision.decode(r.encode())
    assert back == r
    again = r.as_revision(4, pushed_at=6.0, pushed_by="x", comment="", rollback_of=3)
    assert again.digest == r.digest and again.revision == 4 and again.rollback_of == 3
    assert record(files={"m.yaml": model_text(lambda d: d.pop("services"))}).digest != r.digest


def test_model_revision_payload_is_compressed():
    text = model_text(lambda d: d["services"].extend(
        [{**BASE["services"][1], "job": JOB_B.replace("api", f"api{i}"),
          "vips": {"bgp": f"203.0.113.{20 + i}"}} for i in range(100)]))
    r = record(files={"m.yaml": text, **FILES})
    assert len(r.encode()) < len(text) / 2


@pytest.mark.parametrize("value", [b"", b"{}", b'{"format": 1, "payload": "!!"}', b"[1]"])
def test_unreadable_documents_name_their_key(value):
    with pytest.raises(RecordError, match="/k: "):
        ModelRevision.decode(value, "/k")
    with pytest.raises(RecordError, match="/k: "):
        decode_entry(value, "/k")


def test_small_documents():
    assert decode_current(encode_current(9)) == 9
    with pytest.raises(RecordError):
        decode_current(b'{"revision": 0}')
    entry = {"weight": 3, "state": "draining"}
    assert decode_entry(encode_entry(entry, "me@h", 1.0)) == entry
    status = Status("d1", "haproxy", "ok", 2, 40, errors=["x"], etcd_ops={"put": 1})
    assert Status.decode(status.encode()) == status


# ---------------------------------------------------------------- bundle


def write_model(tmp_path, text=None, files=FILES, templates=None):
    (tmp_path / "m.yaml").write_text(text or model_text())
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    for name, content in (templates or {}).items():
        (tmp_path / "tpl").mkdir(exist_ok=True)
        (tmp_path / "tpl" / name).write_text(content)
    return str(tmp_path / "m.yaml")


def test_collect_records_every_file_the_loader_read(tmp_path):
    tpl = '{% extends "builtin/service.cfg.j2" %}\n'
    text = model_text(lambda d: d.update(haproxy={"templates": "tpl"}))
    path = write_model(tmp_path, text, templates={"service.cfg.j2": tpl})
    collected = collect(path)
    assert collected.files == {"m.yaml": text, "telecom.txt": FILES["telecom.txt"],
                               os.path.join("tpl", "service.cfg.j2"): tpl}
    assert [s.name for s in collected.model.services] == [JOB_A, JOB_B]
    again = load_files(collected.files, "m.yaml", str(tmp_path / "cache" / "model"))
    assert again.services == collected.model.services and again.carriers == \
        collected.model.carriers
    assert os.path.exists(tmp_path / "cache" / "model" / "tpl" / "service.cfg.j2")


def test_collect_refuses_invalid_models_with_file_and_line(tmp_path):
    path = write_model(tmp_path, model_text(
        lambda d: d["services"][0]["ports"][0].update(scheduler="fastest")))
    with pytest.raises(ModelError, match=r"m.yaml:\d+: services\[0\].ports\[0\].scheduler"):
        collect(path)


def test_collect_refuses_files_outside_the_model_directory(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "outside.txt").write_text("192.0.2.0/24\n")
    text = model_text(lambda d: d["carriers"][0].update(cidrs="../outside.txt"))
    with pytest.raises(ModelError, match="outside the model's directory"):
        collect(write_model(sub, text, files={}))


# ---------------------------------------------------------------- effective model


REGISTRY = {JOB_A: {"10.0.0.1": {"weight": 10, "state": "removed"},
                    "10.0.0.2": {"weight": 5, "state": "draining"},
                    "10.0.0.9": {"weight": 7, "state": "active"},
                    "10.0.0.8": {"weight": 1, "state": "removed"}},
            "job.gone_service.x_cluster.c_pdl.p_owt.o_cop.c": {"10.9.9.9": {
                "weight": 1, "state": "active"}}}


def servers(model, job):
    return [(str(r.address), r.port, r.weight) for r in model.service(job).real_servers]


def test_effective_model_merges_like_the_file_registry():
    model = the_model()
    merged = effective_model(model, REGISTRY)
    assert servers(merged, JOB_A) == [("10.0.0.2", None, 0), ("10.0.0.9", None, 7)]
    assert servers(merged, JOB_B) == servers(model, JOB_B)
    assert merged.carriers == model.carriers and merged.haproxy == model.haproxy
    # the same IPVS state as the LVS back end's merge of registry.json
    assert lvs_state.desired_ipvs(layouts(merged)) == \
        lvs_state.desired_ipvs(layouts(model), REGISTRY)


def test_effective_model_without_registrations_is_the_model():
    model = the_model()
    assert effective_model(model, {}) is model


# ---------------------------------------------------------------- desired state


def kv(key, value, rev):
    return KeyValue(key, value.encode() if isinstance(value, str) else value, rev, rev, 1, 0)


def put(key, value, rev):
    return Event("put", kv(key, value, rev))


def delete(key, rev):
    return Event("delete", KeyValue(key, b"", 0, rev, 0, 0))


def test_desired_state_from_snapshot_and_events():
    state = DesiredState(KEYS)
    r1, r2 = record(1), record(2, files={"m.yaml": model_text(lambda d: d["services"].pop())})
    backend = KEYS.backend(JOB_A, "10.0.0.9")
    state.load_snapshot(kv(KEYS.current, encode_current(1), 5), kv(KEYS.model(1), r1.encode(), 5),
                        [kv(backend, encode_entry({"weight": 2, "state": "active"}), 4)], 6)
    assert (state.current, state.revision, state.model.digest) == (1, 6, r1.digest)
    assert state.registry == {JOB_A: {"10.0.0.9": {"weight": 2, "state": "active"}}}
    # a push: the new revision and the pointer in one transaction
    assert state.apply_events(7, [put(KEYS.model(2), r2.encode(), 7),
                                  put(KEYS.current, encode_current(2), 7)])
    assert state.model.digest == r2.digest and 1 not in state.models
    # the same value again is no change; a deletion is
    assert not state.apply_events(8, [put(backend, encode_entry({"weight": 2,
                                                                 "state": "active"}), 8)])
    assert state.apply_events(9, [delete(backend, 9)])
    assert state.registry == {} and state.revision == 9
    # a pointer moved to a revision the events did not bring
    assert state.apply_events(10, [put(KEYS.current, encode_current(1), 10)])
    assert state.missing_model() == 1
    state.add_model(r1.as_revision(1, pushed_at=0, pushed_by="", comment=""))
    assert state.missing_model() is None and state.model.digest == r1.digest


def test_unreadable_keys_are_reported_not_applied():
    state = DesiredState(KEYS)
    assert not state.apply_events(3, [put(KEYS.backend(JOB_A, "10.0.0.5"), "nonsense", 3)])
    assert state.registry == {} and "10.0.0.5" in state.problems[0]


# ---------------------------------------------------------------- acl


def test_grants_are_exact_prefixes():
    grants = acl.all_grants(KEYS, ["d1"], [JOB_A])
    by_role = {}
    for g in grants:
        by_role.setdefault(g.role, []).append((g.prefix, g.perm))
    assert by_role == {
        "elb-admin": [("/elb/", "readwrite")],
        "elb-director-d1": [("/elb/desired/", "read"), ("/elb/status/d1/", "readwrite")],
        f"elb-service-{JOB_A}": [("/elb/desired/current", "read"),
                                 ("/elb/desired/models/", "read"),
                                 (f"/elb/desired/backends/{JOB_A}/", "readwrite"),
                                 ("/elb/status/", "read")],
    }
    # a service's write prefix covers its keys and no other service's
    write = by_role[f"elb-service-{JOB_A}"][2][0]
    assert KEYS.backend(JOB_A, "10.0.0.1").startswith(write)
    longer = JOB_A + "x"
    assert not KEYS.backend(longer, "10.0.0.1").startswith(write)


def test_model_fixture_is_yaml():
    assert yaml.safe_load(model_text())["version"] == 1


# ---------------------------------------------------------------- CLI refusals before etcd


def test_push_refuses_an_invalid_model_before_contacting_etcd(tmp_path):
    from click.testing import CliRunner

    from dcnet.cli.elbctl import cli

    path = write_model(tmp_path, model_text(
        lambda d: d["services"][0]["ports"][0].update(scheduler="fastest")))
    # port 9 on loopback: nothing listens there; the command must not even try
    result = CliRunner().invoke(cli, ["push", "-f", path, "--store", "etcd://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "unknown scheduler 'fastest'" in result.output


@pytest.mark.parametrize("url", ["http://127.0.0.1:2379", "etcd://127.0.0.1:2379?bogus=1"])
def test_bad_store_urls_are_usage_errors(url):
    from click.testing import CliRunner

    from dcnet.cli.elbctl import cli

    result = CliRunner().invoke(cli, ["backend", "add", JOB_A, "10.0.0.9", "--store", url])
    assert result.exit_code == 2
    assert "bad store URL" in result.output
