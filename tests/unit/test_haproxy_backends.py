"""The generic backend registry (dcnet.backendfile) and the drain loop
(dcnet.haproxy.drain): LVS's registry semantics, the stored model's safety checks, and
draining that ends idle or with sessions shut down at the deadline (pure logic)."""

from __future__ import annotations

import os

import pytest

from dcnet.backendfile import BackendCommandError, BackendFile, UnsafeFile, record
from dcnet.haproxy import drain
from dcnet.lab import haproxy_lab as hlab

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


STAT = """# pxname,svname,qcur,qmax,scur,smax
web:80,s1,0,0,3,5
web:80,s2,0,0,0,1
web:80,BACKEND,0,0,3,6
"""


def test_parse_sessions():
    assert drain.parse_sessions(STAT) == {("web:80", "s1"): 3, ("web:80", "s2"): 0}
    assert drain.parse_sessions("") == {}


class FakeRuntime:
    """Sessions that end after ``ends`` polls (None: never); records commands."""

    def __init__(self, ends):
        self.ends, self.polls, self.sent = ends, 0, []

    def command(self, text: str) -> str:
        if text.startswith("show stat"):
            self.polls += 1
            left = 0 if self.ends is not None and self.polls > self.ends else 2
            return f"# pxname,svname,scur\nweb:80,s1,{left}\n"
        self.sent.append(text)
        return ""


def run(fake, deadline=1.0):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    return drain.wait_drained(fake.command, [("web:80", "s1")], deadline, poll=0.1,
                              clock=lambda: now[0], sleep=sleep)


def test_a_drain_that_ends_idle_shuts_nothing_down():
    fake = FakeRuntime(ends=3)
    outcome = run(fake)
    assert outcome.idle and fake.sent == [] and "no session left" in outcome.describe()


def test_a_drain_past_its_deadline_shuts_the_sessions_down():
    fake = FakeRuntime(ends=None)
    outcome = run(fake)
    assert not outcome.idle and outcome.shut == {("web:80", "s1"): 2}
    assert fake.sent == ["shutdown sessions server web:80/s1"]
    assert "deadline passed" in outcome.describe() and "2 session(s)" in outcome.describe()


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
