"""Unit tests of macvlan mode's pure parts: T1/T2, client id, hostname, ACK reduction,
address/route planning, the journal and release queue formats, the agent protocol's
framing, the macvlan config fields and the plugin's agent-down answers."""

from __future__ import annotations

import io
import json
import os
import socket
import threading

import pytest

from dcnet.cni import agentproto, leases, skel
from dcnet.cni.config import load_conf
from dcnet.cni.errors import CniError
from dcnet.cni.plugin import ModeRouter

pytestmark = pytest.mark.unit

ACK = {"yiaddr": "192.168.77.120", "xid": 7, "chaddr": "aa:bb:cc:dd:ee:ff",
       "options": {"message_type": 5, "subnet_mask": "255.255.255.0",
                   "router": ["192.168.77.254", "192.168.77.253"],
                   "name_server": ["192.168.77.250"], "domain_name": "pods.lab",
                   "lease_time": 120, "renewal_time": 6, "rebinding_time": 10,
                   "server_id": "192.168.77.250", "client_id": {"type": 0, "key": b"dcnet:x"},
                   "host_name": "web-1"}}


# ---------------------------------------------------------------- timers


@pytest.mark.parametrize(("lease", "t1", "t2", "expected"), [
    (120, None, None, (60.0, 105.0)),  # RFC 2131 defaults: 0.5 and 0.875
    (120, 6, 10, (6.0, 10.0)),  # consistent server values are kept
    (120, 30, None, (30.0, 105.0)),
    (120, None, 40, (20.0, 40.0)),  # T1 default beyond the given T2: half of T2
    (120, 50, 40, (20.0, 40.0)),  # T1 past T2: replaced
    (120, 10, 200, (10.0, 105.0)),  # T2 past expiry: replaced
    (120, 0, 0, (60.0, 105.0)),
    (0xFFFFFFFF, 10, 20, (None, None)),  # infinite lease: no timers
    (None, None, None, (None, None)),
])
def test_lease_timers(lease, t1, t2, expected):
    assert leases.lease_timers(lease, t1, t2) == expected


def test_record_lease_times_are_absolute():
    record = {"lease": {"ack": leases.sanitize_ack(ACK), "obtained": 1000.0,
                        "server_mac": "aa:aa:aa:aa:aa:aa"}}
    assert leases.record_lease_times(record) == {"obtained": 1000.0, "t1": 1006.0,
                                                 "t2": 1010.0, "expiry": 1120.0}
    assert leases.record_lease_times({"lease": None}) is None


# ---------------------------------------------------------------- identity


def test_client_id_from_the_pod_identity():
    value = leases.client_id("pod", "default", "web-1", "eth0", "c0ffee")
    assert value == b"dcnet:default/web-1/eth0"
    # the same pod in a new sandbox (new container id, new MAC) keeps its identity
    assert leases.client_id("pod", "default", "web-1", "eth0", "beef") == value
    assert leases.client_id("pod", "default", "web-1", "net1", "c0ffee") != value
    assert leases.client_id("pod", "other", "web-1", "eth0", "c0ffee") != value


def test_client_id_fallbacks():
    assert leases.client_id("mac", "default", "web-1", "eth0", "c1") is None
    assert leases.client_id("pod", None, None, "eth0", "c1") == b"dcnet:container/c1/eth0"
    long = leases.client_id("pod", "n" * 63, "p" * 253, "eth0", "c1")
    assert long.startswith(b"dcnet:") and len(long) == len(b"dcnet:") + 64
    assert long == leases.client_id("pod", "n" * 63, "p" * 253, "eth0", "c2")
    with pytest.raises(ValueError):
        leases.client_id("duid", "a", "b", "eth0", "c")


@pytest.mark.parametrize(("pod", "label"), [
    ("web-1", "web-1"), ("Web_1.prod", "web-1-prod"), ("-x-", "x"), ("", None),
    (None, None), ("é", None), ("a" * 80, "a" * 63),
])
def test_hostname_option(pod, label):
    assert leases.hostname_option(pod) == label


# ---------------------------------------------------------------- leases to pod config


def test_sanitize_ack_keeps_a_json_safe_subset():
    kept = leases.sanitize_ack(ACK)
    json.dumps(kept)  # JSON-safe: bytes and enums are gone
    assert kept["yiaddr"] == "192.168.77.120"
    assert "client_id" not in kept["options"] and "host_name" not in kept["options"]
    assert kept["options"]["router"] == ["192.168.77.254", "192.168.77.253"]


def test_lease_view():
    view = leases.lease_view(leases.sanitize_ack(ACK))
    assert view == {"address": "192.168.77.120/24", "gateway": "192.168.77.254",
                    "dns": {"nameservers": ["192.168.77.250"], "domain": "pods.lab"}}
    bare = leases.lease_view({"yiaddr": "10.0.0.5", "options": {}})
    assert bare == {"address": "10.0.0.5/32", "gateway": None, "dns": {}}


def test_plan_pod_config_first_lease_renewal_and_change():
    desired = {"address": "10.1.0.5/24", "gateway": "10.1.0.1"}
    assert leases.plan_pod_config(None, desired) == [
        ("add-address", "10.1.0.5/24"), ("set-gateway", "10.1.0.1")]
    assert leases.plan_pod_config(desired, desired) == []  # a renewal changes nothing
    moved = {"address": "10.1.0.9/24", "gateway": "10.1.0.1"}
    # new address first, route, then the old one goes: never without an address
    assert leases.plan_pod_config(desired, moved) == [
        ("add-address", "10.1.0.9/24"), ("set-gateway", "10.1.0.1"),
        ("del-address", "10.1.0.5/24")]
    assert leases.plan_pod_config(desired, {"address": "10.1.0.5/24", "gateway": None}) == [
        ("del-gateway", "")]
    assert leases.plan_pod_config(desired, {"address": "10.1.0.5/24",
                                            "gateway": "10.1.0.2"}) == [
        ("set-gateway", "10.1.0.2")]


# ---------------------------------------------------------------- journal


def _record(**changes) -> dict:
    record = leases.new_record("mvnet", "c1", "eth0", "/run/netns/p", (3, 4), "eth0",
                               "bridge", "aa:bb:cc:dd:ee:01", "6463", "web-1")
    record.update(changes)
    return record


def test_record_round_trip_and_format():
    record = _record(state=leases.BOUND, lease={
        "ack": leases.sanitize_ack(ACK), "server_mac": "aa:aa:aa:aa:aa:aa", "obtained": 5.0},
        configured={"address": "192.168.77.120/24", "gateway": "192.168.77.254"})
    data = leases.encode_record(record)
    assert data.endswith(b"\n") and data.count(b"\n") == 1  # one JSON line
    assert leases.decode_record(data) == record
    assert json.loads(data)["version"] == leases.RECORD_VERSION


@pytest.mark.parametrize(("data", "words"), [
    (b"{", "not JSON"), (b"[]", "not a JSON object"),
    (leases.encode_record(_record(version=2)), "version 2"),
    (leases.encode_record(_record(state="weird")), "field state"),
    (leases.encode_record(_record(state="bound")), "field lease"),
    (leases.encode_record({k: v for k, v in _record().items() if k != "mac"}), "field mac"),
])
def test_bad_records_are_refused_naming_the_problem(data, words):
    with pytest.raises(leases.JournalError) as caught:
        leases.decode_record(data, "/x/c1+eth0.json")
    assert words in str(caught.value) and "/x/c1+eth0.json" in str(caught.value)


def test_journal_write_read_remove_and_skip_corrupt(tmp_path):
    journal = leases.Journal(str(tmp_path))
    journal.write(_record())
    journal.write(_record(containerID="c2"))
    (tmp_path / "leases" / "broken+eth0.json").write_text("{half")
    assert journal.read("c1", "eth0")["containerID"] == "c1"
    found, problems = journal.records()
    assert sorted(r["containerID"] for r in found) == ["c1", "c2"]
    assert len(problems) == 1 and "broken+eth0.json" in problems[0]
    assert oct(os.stat(journal.path("c1", "eth0")).st_mode & 0o777) == "0o600"
    assert not [p for p in (tmp_path / "leases").iterdir() if p.name.endswith(".tmp")]
    assert journal.remove("c1", "eth0") and not journal.remove("c1", "eth0")
    assert journal.read("c1", "eth0") is None


def test_journal_write_is_atomic_under_concurrent_readers(tmp_path):
    journal = leases.Journal(str(tmp_path))
    journal.write(_record())
    written = ["web-1"] + [f"h{index}" * (index % 7 + 1) for index in range(200)]
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(journal.read("c1", "eth0")["hostname"])  # never half a file
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)
    reader = threading.Thread(daemon=True, target=read)
    reader.start()
    try:
        for hostname in written[1:]:
            journal.write(_record(hostname=hostname))
    finally:
        stop.set()
        reader.join()
    if errors:
        raise errors[0]
    assert seen
    assert set(seen) <= set(written), f"read records never written: {set(seen) - set(written)}"


def test_attachment_keys_are_unambiguous():
    assert leases.attachment_key("a_b", "c") != leases.attachment_key("a", "b_c")
    with pytest.raises(leases.JournalError):
        leases.attachment_key("a+b", "eth0")


def test_release_queue(tmp_path):
    queue = leases.ReleaseQueue(str(tmp_path))
    assert queue.items() == []
    queue.put("c1", "eth0", "/run/netns/p")
    items = queue.items()
    assert [(i["containerID"], i["ifname"], i["netns"]) for i in items] == [
        ("c1", "eth0", "/run/netns/p")]
    assert queue.remove("c1", "eth0") and queue.items() == []


# ---------------------------------------------------------------- protocol


def test_protocol_framing():
    message = agentproto.request("ADD", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
                                         "CNI_NETNS": "", "OTHER": "x"}, {"name": "n"})
    assert message["env"] == {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    line = agentproto.encode(message)
    assert line.endswith(b"\n") and agentproto.decode(line[:-1]) == message
    with pytest.raises(ValueError):
        agentproto.decode(b'{"proto": 2}')


def test_call_against_a_unix_socket_server(tmp_path):
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            request = agentproto.decode(agentproto.read_line(conn))
            conn.sendall(agentproto.encode({"proto": 1, "result": {"echo": request["command"]}}))
    thread = threading.Thread(daemon=True, target=answer)
    thread.start()
    assert agentproto.call(path, agentproto.request("PING", {}, {}), 5) == {
        "proto": 1, "result": {"echo": "PING"}}
    thread.join()
    server.close()
    with pytest.raises(agentproto.Unreachable):
        agentproto.call(str(tmp_path / "none.sock"), {"proto": 1}, 1)


# ---------------------------------------------------------------- config and plugin


MACVLAN = {"cniVersion": "1.1.0", "name": "mvnet", "type": "dcnet", "mode": "macvlan"}


def test_macvlan_config_fields():
    conf = load_conf(dict(MACVLAN, master="eth1", macvlanMode="vepa", hostShim=True,
                          dhcp={"clientID": "pod", "hostname": False, "timeout": 9},
                          stateDir="/var/lib/x", runDir="/run/y"))
    assert (conf.master, conf.macvlan_mode, conf.client_id, conf.send_hostname,
            conf.dhcp_timeout) == ("eth1", "vepa", "pod", False, 9)
    assert conf.host_shim == {"name": "dcnshim0", "address": None}
    assert conf.lease_dir == "/var/lib/x/mvnet"
    assert conf.socket_path == "/run/y/mvnet/agent.sock"
    assert not conf.mtu_explicit and load_conf(dict(MACVLAN, mtu=1400)).mtu_explicit
    defaults = load_conf(MACVLAN)
    assert (defaults.master, defaults.macvlan_mode, defaults.client_id) == (None, "bridge",
                                                                           "mac")


@pytest.mark.parametrize(("change", "field"), [
    ({"macvlanMode": "source"}, "macvlanMode"), ({"master": "a/b"}, "master"),
    ({"master": "x" * 16}, "master"), ({"hostShim": "yes"}, "hostShim"),
    ({"hostShim": {"address": "1.2.3"}}, "hostShim.address"),
    ({"dhcp": {"clientID": "duid"}}, "dhcp.clientID"),
    ({"dhcp": {"timeout": 0}}, "dhcp.timeout"), ({"dhcp": []}, "dhcp"),
    ({"agentSocket": "relative.sock"}, "agentSocket"), ({"mtu": 40}, "mtu"),
])
def test_macvlan_config_errors_name_the_field(change, field):
    with pytest.raises(CniError) as caught:
        load_conf(dict(MACVLAN, **change))
    assert caught.value.code == 7 and f": {field}:" in caught.value.msg


@pytest.mark.parametrize(("command", "code"), [("ADD", 11), ("STATUS", 50), ("CHECK", 11),
                                               ("GC", 11)])
def test_plugin_without_agent(tmp_path, command, code):
    """No agent listening: ADD/CHECK/GC try-again-later, STATUS 50; nothing is written."""
    (tmp_path / "netns").write_text("")  # stands for the pod's namespace path
    conf = dict(MACVLAN, agentSocket=str(tmp_path / "none.sock"),
                stateDir=str(tmp_path / "state"),
                prevResult={"cniVersion": "1.1.0", "interfaces": [], "ips": []},
                **{"cni.dev/valid-attachments": []})
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": str(tmp_path / "netns"),
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    out = io.StringIO()
    rc = skel.dispatch(ModeRouter(), env, io.BytesIO(json.dumps(conf).encode()), out,
                       io.StringIO())
    assert rc == 1 and json.loads(out.getvalue())["code"] == code
    assert "unreachable" in json.loads(out.getvalue())["msg"]
    assert sorted(os.listdir(tmp_path)) == ["netns"]


def test_del_without_agent_queues_the_release_and_succeeds(tmp_path):
    conf = dict(MACVLAN, agentSocket=str(tmp_path / "none.sock"),
                stateDir=str(tmp_path / "state"))
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    err = io.StringIO()
    rc = skel.dispatch(ModeRouter(), env, io.BytesIO(json.dumps(conf).encode()),
                       io.StringIO(), err)
    assert rc == 0
    items = leases.ReleaseQueue(str(tmp_path / "state" / "mvnet")).items()
    assert [(i["containerID"], i["ifname"]) for i in items] == [("c1", "eth0")]
