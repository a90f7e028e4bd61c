"""DHCP packets from the network against the macvlan agent (issue #15): crafted with scapy.

A node runs ``dcnet-agent`` with real dnsmasq leases (T1 6 s, T2 10 s, so renewals happen
while the packets arrive); a sender in the DHCP server's namespace (scapy, a rogue second
server: its own MAC and address) sends replies the agent's DHCP clients must survive:
truncated and overflowing options, a message type of 0 bytes or 99, no message type, a
client identifier of 0 bytes, binary host and domain names, oversized options filling
the frame, lease time 0 and 2^32-1, OFFERs, ACKs and a NAK storm, with wrong xids
(blind) and with the right xid (sniffed from the clients' requests). Afterwards the agent
still serves (a new pod gets a lease from the real server), every earlier pod keeps its
address, and its lease is still renewed with the real server (the lease file's expiry
moves), which a dead receive loop would stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dcnet.lab.builder import Lab
from dcnet.lab.cni_dhcp import NET, DhcpLab, pod_ip, topology, wait_until

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"
ROGUE_IP = f"{NET}.249"

SENDER = r'''
import json, random, sys, time
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, AsyncSniffer, conf, sendp
conf.verb = 0
spec = json.loads(sys.argv[1])
ROGUE_MAC, ROGUE = "02:00:00:00:66:66", spec["rogue"]
ip = bytes(int(x) for x in ROGUE.split("."))
HEAD = b"\x36\x04" + ip                          # server identifier: the rogue
BAD = {
    "truncated option": b"\x35\x01\x05" + HEAD + b"\x33\x04",
    "length past the end": b"\x35\x01\x05" + HEAD + b"\x33\xff\0\0\0",
    "lease time of 0 bytes": b"\x35\x01\x05" + HEAD + b"\x33\x00\xff",
    "message type of 0 bytes": b"\x35\x00" + HEAD + b"\xff",
    "message type 99": b"\x35\x01\x63" + HEAD + b"\xff",
    "no message type": HEAD + b"\x33\x04\0\0\0\x3c\xff",
    "no options": b"",
    "client id of 0 bytes": b"\x35\x01\x05" + HEAD + b"\x3d\x00\xff",
    "router of 3 bytes": b"\x35\x01\x05" + HEAD + b"\x03\x03\x01\x02\x03\xff",
    "binary host name": b"\x35\x01\x05" + HEAD + b"\x0c\x04\xff\xfe\x00\x80\xff",
    "binary domain name": b"\x35\x01\x05" + HEAD + b"\x0f\x04\xff\xfe\x00\x80\xff",
    "oversized options": b"\x35\x01\x05" + HEAD + (b"\x2b\xff" + b"\xaa" * 255) * 4 + b"\xff",
    "lease time 0": b"\x35\x01\x05" + HEAD + b"\x33\x04\0\0\0\0\x01\x04\xff\xff\xff\0\xff",
    "lease time 2^32-1": b"\x35\x01\x05" + HEAD + b"\x33\x04\xff\xff\xff\xff\xff",
    "offer, lease 0": b"\x35\x01\x02" + HEAD + b"\x33\x04\0\0\0\0\xff",
    "offer, lease 2^32-1": b"\x35\x01\x02" + HEAD + b"\x33\x04\xff\xff\xff\xff\xff",
    "nak": b"\x35\x01\x06" + HEAD + b"\xff",
}


def frame(xid, mac, options, yiaddr=spec["yiaddr"], header=None):
    chaddr = bytes.fromhex(mac.replace(":", "")) + b"\0" * 10
    boot = header if header is not None else bytes(BOOTP(
        op=2, xid=xid, chaddr=chaddr, yiaddr=yiaddr, siaddr=ROGUE, flags=0x8000,
        options=b"c\x82Sc"))
    return (Ether(src=ROGUE_MAC, dst="ff:ff:ff:ff:ff:ff") /
            IP(src=ROGUE, dst="255.255.255.255") / UDP(sport=67, dport=68) / (boot + options))


def all_bad(xid, mac, skip=()):
    out = [frame(xid, mac, opts) for name, opts in BAD.items() if name not in skip]
    out.append(frame(xid, mac, b"", header=b"\x02" * 20))          # a truncated header
    return out


sent = 0
if spec["mode"] == "blind":
    rng = random.Random(1)
    for mac in spec["macs"]:
        for _ in range(spec["rounds"]):
            frames = all_bad(rng.getrandbits(32), mac)
            sendp(frames, iface="eth0")
            sent += len(frames)
        naks = [frame(rng.getrandbits(32), mac, BAD["nak"]) for _ in range(spec["naks"])]
        sendp(naks, iface="eth0")
        sent += len(naks)
else:   # answer every client request seen with every bad reply, the right xid
    def answer(pkt):
        global sent
        if BOOTP in pkt and pkt[BOOTP].op == 1:
            frames = all_bad(pkt[BOOTP].xid, pkt[Ether].src, spec["skip"])
            sendp(frames, iface="eth0")
            sent += len(frames)
    sniffer = AsyncSniffer(iface="eth0", filter="udp and dst port 67", prn=answer, store=False)
    sniffer.start()
    time.sleep(spec["seconds"])
    sniffer.stop()
print(json.dumps({"sent": sent}))
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    root = tmp_path_factory.mktemp("dcnet-hostile-dhcp")
    with Lab(topology(("n1",))) as built:
        made = DhcpLab(built, root, nodes=("n1",))
        try:
            made.start_dnsmasq()
            made.start_agent("n1")
            yield made
        finally:
            made.close()


def send(lab: DhcpLab, **spec) -> dict:
    spec = {"rogue": ROGUE_IP, "yiaddr": f"{NET}.50", **spec}
    done = subprocess.run(["ip", "netns", "exec", lab.lab.netns("dhcp"), sys.executable,
                           "-c", SENDER, json.dumps(spec)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def add(lab: DhcpLab, name: str) -> tuple[str, str, dict]:
    """(container id, namespace path, ADD result) of a new pod."""
    path = lab.pod(name)
    result = lab.runtime("n1").add(name, path, args=POD_ARGS.format(name))
    return name, path, result


def obtained(lab: DhcpLab, pod: str) -> float:
    return lab.journal("n1").get(f"{pod}+eth0", {}).get("lease", {}).get("obtained", 0.0)


def renewed_after(lab: DhcpLab, pod: str) -> None:
    """Wait for the pod's client to take a renewal ACK after this call (the journal's
    ``obtained`` moves when the client's hook runs, not when the server answers: a
    client whose receive loop died leaves it still)."""
    before = obtained(lab, pod)
    wait_until(lambda: obtained(lab, pod) > before,
               f"a renewal of {pod}'s lease after the hostile packets", timeout=60)


def check_survived(lab: DhcpLab, pods: list[tuple[str, str, dict]], new: str) -> None:
    assert lab.agents["n1"].poll() is None, lab.agent_log("n1")
    for name, path, result in pods:
        ip = result["ips"][0]["address"]
        assert pod_ip(path) == [ip], (path, lab.agent_log("n1")[-3000:])
        renewed_after(lab, name)
    _, path, result = add(lab, new)
    address = result["ips"][0]["address"]
    assert address.startswith(f"{NET}.1") and pod_ip(path) == [address]
    assert lab.server_leases()[address.split("/")[0]]["mac"] == result["interfaces"][0]["mac"]
    assert "Traceback" not in lab.agent_log("n1")


def test_blind_malformed_replies_and_a_nak_storm_leave_the_agent_serving(lab):
    pods = [add(lab, "blind-a"), add(lab, "blind-b")]
    macs = [result["interfaces"][0]["mac"] for _, _, result in pods]
    sent = send(lab, mode="blind", macs=macs, rounds=20, naks=2000)["sent"]
    assert sent == 2 * (20 * 18 + 2000)
    check_survived(lab, pods, "blind-after")


def test_rogue_server_with_the_right_xid_cannot_break_a_client(lab):
    pods = [add(lab, "xid-a")]
    # every renewal and every new pod's DISCOVER/REQUEST gets 17 answers with its own
    # xid from the rogue: malformed ones, OFFERs and ACKs with lease time 0, an ACK with
    # lease time 2^32-1 and a NAK, all naming the rogue as server, so that the client
    # must ignore the ACKs and NAKs as answers to a REQUEST meant for the real server
    # (renewing: the lease's; requesting: the offer's). A well-formed OFFER is left out:
    # DHCP has no authentication, and whichever OFFER comes first may win the race.
    spec = {"mode": "sniff", "seconds": 14, "skip": ["offer, lease 2^32-1"]}
    sender = subprocess.Popen(["ip", "netns", "exec", lab.lab.netns("dhcp"), sys.executable,
                               "-c", SENDER, json.dumps({"rogue": ROGUE_IP,
                                                         "yiaddr": f"{NET}.50", **spec})],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        during = add(lab, "xid-during")
        out, err = sender.communicate(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
    assert sender.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["sent"] > 0
    check_survived(lab, [*pods, during], "xid-after")
