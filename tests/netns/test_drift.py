"""``elbctl drift`` against a real HAProxy in a lab: a weight set by hand on the runtime
API (someone else, not dcnet) is reported as an audit event (JSON line printed and
appended to the audit log, exit 2), left alone without --repair, fixed with --repair;
no drift: exit 0 and nothing logged."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile

import pytest
import yaml
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab

pytestmark = pytest.mark.netns

RS1, RS2 = hlab.server_address(1), hlab.server_address(2)
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-drift-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def by_hand(paths: Paths, command: str) -> str:
    """Someone else on the runtime API: a raw socket, not dcnet's client."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(paths.admin_socket)
        sock.sendall(command.encode() + b"\n")
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
    return out.decode()


def weight_of(paths: Paths, slot: str) -> int:
    for line in by_hand(paths, f"get weight {BACKEND}/{slot}").splitlines():
        if "(initial" in line:
            return int(line.split()[0])
    raise AssertionError(f"no weight for {slot}")


def test_a_weight_set_by_hand_is_audited_and_repaired(lab_factory, workdir):
    lab = lab_factory(hlab.topology(2))
    paths = Paths(run_dir=f"{workdir}/run")
    data = hlab.model_data({RS1: 10, RS2: 20})
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    model_file = f"{workdir}/model.yaml"
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    audit = f"{workdir}/audit/audit.jsonl"
    args = ["drift", "-f", model_file, "--target", "haproxy", "--haproxy-run-dir",
            paths.run_dir, "--audit-log", audit]
    runner = CliRunner()
    apply = runner.invoke(cli, ["apply", "-f", model_file, "--target", "haproxy",
                                "--haproxy-run-dir", paths.run_dir])
    assert apply.exit_code == 0, apply.output

    clean = runner.invoke(cli, args)
    assert clean.exit_code == 0, clean.output
    assert "no drift" in clean.output

    slot = next(line.split()[3] for line in by_hand(paths, f"show servers state {BACKEND}")
                .splitlines()[2:] if line.split()[4] == RS2)
    assert weight_of(paths, slot) == 20
    by_hand(paths, f"set weight {BACKEND}/{slot} 3")
    assert weight_of(paths, slot) == 3

    found = runner.invoke(cli, args)
    assert found.exit_code == 2, found.output
    event = json.loads(found.output.splitlines()[0])
    assert event["event"] == "drift" and event["target"] == "haproxy"
    assert event["director"] == socket.gethostname() and event["time"]
    assert event["observer"]["user"]
    servers = [c for c in event["changes"] if c["kind"] == "server"]
    assert [c["action"] for c in servers] == ["update"], event
    assert (servers[0]["old"]["weight"], servers[0]["new"]["weight"]) == (3, 20)
    assert {c["kind"] for c in event["changes"]} <= {"server", "config"}   # the file follows
    assert any("3 -> 20" in line for line in event["described"]), event["described"]
    assert weight_of(paths, slot) == 3                  # without --repair: only reported
    with open(audit) as handle:
        logged = [json.loads(line) for line in handle]
    assert logged == [event]

    repaired = runner.invoke(cli, [*args, "--repair"])
    assert repaired.exit_code == 2, repaired.output
    event2 = json.loads(repaired.output.splitlines()[0])
    assert event2["repair"]["ok"] and event2["repair"]["applied"] == event2["changes"]
    assert weight_of(paths, slot) == 20
    with open(audit) as handle:
        assert [json.loads(line) for line in handle] == [event, event2]

    after = runner.invoke(cli, args)
    assert after.exit_code == 0, after.output
    with open(audit) as handle:
        assert len(handle.readlines()) == 2
