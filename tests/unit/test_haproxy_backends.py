"""The generic backend registry (dcnet.backendfile) and the drain loop
(dcnet.haproxy.drain): LVS's registry semantics, the stored model's safety checks, and
draining that ends idle or with sessions shut down at the deadline (pure logic)."""

from __future__ import annotations

import os
import pickle

import pytest

from dcnet.backendfile import BackendCommandError, BackendFile, UnsafeFile, record
from dcnet.haproxy import drain
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import pieces as model_pieces
from dcnet.sysio.files import atomic_write

pytestmark = pytest.mark.unit

RS1 = hlab.server_address(1)


@pytest.fixture
def files(tmp_path):
    return BackendFile(str(tmp_path / "run"), "haproxy")


def test_registry_semantics_are_lvs_and_the_effective_model_merges_them(files):
    model = hlab.model_of(hlab.model_data({RS1: 10}))
    assert record(files, model, "add", hlab.JOB, "10.252.0.50", 5) == \
        (hlab.JOB, "10.252.0.50", {"weight": 5, "state": "active"})
    assert record(files, model, "drain", hlab.JOB, "10.252.0.50", None)[2] == \
        {"weight": 5, "state": "draining"}
    assert record(files, model, "remove", hlab.JOB, "10.252.0.50", None)[2] is None
    assert record(files, model, "remove", hlab.JOB, RS1, None)[2]["state"] == "removed"
    record(files, model, "add", hlab.JOB[:20], "10.252.0.51", None)    # a unique prefix
    merged = files.effective(model).services[0].real_servers
    assert [(str(s.address), s.weight) for s in merged] == [("10.252.0.51", 1)]
    with pytest.raises(BackendCommandError, match="unknown service"):
        record(files, model, "add", "job.nothing", "10.252.0.52", None)
    with pytest.raises(BackendCommandError):
        record(files, model, "add", hlab.JOB, "not-an-address", None)
    assert oct(os.stat(files.registry_path).st_mode & 0o777) == "0o600"


def test_the_model_round_trips_and_an_unsafe_file_is_refused(files):
    model = hlab.model_of(hlab.model_data({RS1: 10}))
    assert files.last_model() is None
    files.save_model(model)
    assert files.last_model() == model
    os.chmod(files.model_path, 0o666)
    with pytest.raises(UnsafeFile, match="writable by others"):
        files.last_model()


def test_the_model_is_kept_in_pieces_and_a_whole_model_file_still_reads(files):
    """Version 2 holds the model's pieces (a drift check reads them one at a time);
    a version-1 file (the model pickled whole, before) reads as the same model."""
    model = hlab.model_of(hlab.model_data({RS1: 10}))
    files.save_model(model)
    with open(files.model_path, "rb") as handle:
        assert pickle.load(handle)["pieces"] == model_pieces.pack(model)
    assert files.last_pieces().whole() == model
    atomic_write(files.model_path, pickle.dumps({"version": 1, "model": model}), mode=0o600)
    assert files.last_model() == model and files.last_pieces().whole() == model


STAT = """# pxname,svname,qcur,qmax,scur,smax,addr
web:80,s1,0,0,3,5,10.0.0.1:8080
web:80,s2,0,0,0,1,10.0.0.2:8080
web:80,BACKEND,0,0,3,6,
"""


def test_parse_stat_and_match_by_address():
    rows = drain.parse_stat(STAT)
    assert [(r["svname"], r["scur"], r["addr"]) for r in rows] == \
        [("s1", "3", "10.0.0.1:8080"), ("s2", "0", "10.0.0.2:8080")]
    assert drain.parse_stat("") == []
    match = drain.Match(frozenset({"web:80"}), "10.0.0.1")
    assert match("web:80", "10.0.0.1:8080") and not match("web:80", "10.0.0.11:8080")
    assert not match("other:80", "10.0.0.1:8080")
    assert not drain.Match(frozenset({"web:80"}), "10.0.0.1", 9)("web:80", "10.0.0.1:8080")
    six = drain.Match(frozenset({"web:80"}), "2001:db8::1", 80)
    assert six("web:80", "[2001:db8::1]:80")


class FakeWorker:
    """A worker whose sessions on s1 end after ``ends`` polls (None: never)."""

    def __init__(self, ends, label=""):
        self.ends, self.polls, self.sent, self.label = ends, 0, [], label

    def command(self, text: str) -> str:
        if text.startswith("show stat"):
            self.polls += 1
            left = 0 if self.ends is not None and self.polls > self.ends else 2
            return f"# pxname,svname,scur,addr\nweb:80,s1,{left},10.0.0.1:8080\n"
        if text == "show sess":
            return ("0x1: proto=tcpv4 fe=web:80 be=web:80 srv=s1 ts=00\n"
                    "0x2: proto=tcpv4 fe=web:80 be=web:80 srv=s2 ts=00\n")
        self.sent.append(text)
        return ""

    def worker(self):
        return drain.Worker(self.command, self.label)


def run(fakes, deadline=1.0):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    return drain.wait_drained([f.worker() for f in fakes],
                              drain.Match(frozenset({"web:80"}), "10.0.0.1"), deadline,
                              poll=0.1, clock=lambda: now[0], sleep=sleep)


def test_a_drain_that_ends_idle_shuts_nothing_down():
    current, old = FakeWorker(ends=3), FakeWorker(ends=5, label="old worker 7")
    outcome = run([current, old])
    assert outcome.idle and current.sent == old.sent == []
    assert outcome.slots == ["web:80/s1", "web:80/s1 (old worker 7)"]
    assert "no session left" in outcome.describe()


def test_a_drain_past_its_deadline_shuts_the_sessions_down_in_every_worker():
    current, old = FakeWorker(ends=None), FakeWorker(ends=None, label="old worker 7")
    outcome = run([current, old])
    assert not outcome.idle
    assert outcome.shut == {"web:80/s1": 2, "web:80/s1 (old worker 7)": 2}
    assert current.sent == ["shutdown sessions server web:80/s1"]
    assert old.sent == ["shutdown session 0x1"]        # per stream: its proxy is stopped
    assert "deadline passed" in outcome.describe() and "4 session(s)" in outcome.describe()


def test_the_backend_command_routes_lvs_to_its_fast_path_and_checks_target_flags():
    from click.testing import CliRunner

    from dcnet.cli.elbctl import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["backend", "add", hlab.JOB, RS1, "--lvs-netns",
                                 "dcnet-no-such-netns"])
    assert result.exit_code == 3 and "lvs:" in result.output, result.output
    result = runner.invoke(cli, ["backend", "add", hlab.JOB, RS1, "--haproxy-run-dir",
                                 "/nonexistent"])
    assert result.exit_code == 2 and "not of --target lvs" in result.output, result.output


def test_only_known_records_nothing_for_an_unknown_server(files):
    model = hlab.model_of(hlab.model_data({RS1: 10}))
    assert record(files, model, "drain", hlab.JOB, "10.252.9.9", None, only_known=True) == \
        (hlab.JOB, "10.252.9.9", None)
    assert files.registry() == {}
    assert record(files, model, "drain", hlab.JOB, RS1, None, only_known=True)[2] == \
        {"weight": 10, "state": "draining"}
