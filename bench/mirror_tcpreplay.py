"""Benchmark: tcpreplay (Debian) as the packet-level baseline of dcnet's replay (issue #19).

A lab of two namespaces on one veth: ``server`` runs the logging HTTP/1.1 service
(``dcnet.lab.mirror_service``, :8080) with nft counters on what arrives and leaves;
``inject`` is the replaying side. One recording (``--sessions`` keep-alive sessions of
``--requests`` requests, every session with its SYN and FIN, as the recorder writes them)
is replayed four ways against a freshly started server each time:

1. ``tcpreplay``: ``elbctl mirror export`` writes the recording as a raw-IP pcap; each
   packet gets a blank Ethernet header here (:func:`raw_to_ethernet`: Debian's
   tcprewrite 4.4.3 ``--dlt=enet`` stops on LINKTYPE_RAW input with "Expected IPv4
   packet: got 0", the error of appneta/tcpreplay#792); ``tcprewrite`` then sets the
   inject and server MACs, retargets every packet to inject -> server
   (``--srcipmap``/``--dstipmap``) with ``--fixcsum``; ``tcpreplay --topspeed -i eth0``
   sends it from the inject namespace.
2. ``tcpreplay-no-rst``: the same, with the inject namespace's kernel kept from resetting
   the server's SYN-ACKs (nft drops its outgoing RSTs): the server's half-open
   connections stay, so only the sequence/ack numbers stand in the way.
3. ``dcnet``: ``dcnet.mirror.replay.run_replay`` at x1 from the inject namespace, while
   ``tcpdump`` in the server namespace captures what the inject side sent (real
   sessions: real handshakes, sequence and acknowledgement numbers).
4. ``tcpreplay-real-capture``: that real capture, its checksums fixed (``tcprewrite
   --fixcsum``: veth offloads them, so the captured ones are partial), replayed (its MACs
   and addresses are already inject -> server) by ``tcpreplay --topspeed``.

For each: requests the server logged against the recording's requests, the nft counters
in the server (SYNs, PSH segments and RSTs in; SYN-ACKs, RSTs and PSH segments out) and
tcpreplay's own count of packets sent.

    sudo .venv/bin/python bench/mirror_tcpreplay.py [--sessions 500] [--requests 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

from dcnet.lab.builder import Lab
from dcnet.lab.mirror_service import read_log, request_bytes
from dcnet.mirror import recording, replay

PY = sys.executable
SERVER, INJECT, PORT = "10.98.0.1", "10.98.0.2", 8080

COUNTERS = f"""table ip watch {{
  counter syn_in {{ }}
  counter psh_in {{ }}
  counter rst_in {{ }}
  counter synack_out {{ }}
  counter rst_out {{ }}
  counter psh_out {{ }}
  chain input {{
    type filter hook prerouting priority -400; policy accept;
    tcp dport {PORT} tcp flags & (syn | ack) == syn counter name syn_in
    tcp dport {PORT} tcp flags & psh == psh counter name psh_in
    tcp dport {PORT} tcp flags & rst == rst counter name rst_in
  }}
  chain output {{
    type filter hook output priority -400; policy accept;
    tcp sport {PORT} tcp flags & (syn | ack) == syn | ack counter name synack_out
    tcp sport {PORT} tcp flags & rst == rst counter name rst_out
    tcp sport {PORT} tcp flags & psh == psh counter name psh_out
  }}
}}
"""

NO_RST = """table ip norst {
  chain output {
    type filter hook output priority 0; policy accept;
    tcp flags & rst == rst drop
  }
}
"""


def topology() -> dict:
    return {
        "hosts": ["server", "inject"],
        "links": [{"a": {"host": "server", "ifname": "eth0", "addresses": [f"{SERVER}/24"]},
                   "b": {"host": "inject", "ifname": "eth0",
                         "addresses": [f"{INJECT}/24"]}}],
    }


def synthetic(sessions: int, requests: int) -> list[recording.Session]:
    """Sessions as the recorder writes them: SYN seen, one chunk a request, FIN."""
    out = []
    for i in range(sessions):
        chunks, offset = [], 0
        for r in range(requests):
            data = request_bytes(SERVER, f"/s{i}/r{r}")
            chunks.append(recording.Chunk(offset, r * 0.001, data))
            offset += len(data)
        out.append(recording.Session(f"t{i}", f"10.1.{i // 250}.{1 + i % 250}:{30000 + i}",
                                     f"{SERVER}:{PORT}", 1_800_000_000 + i * 0.002,
                                     chunks=tuple(chunks)))
    return out


def mac(lab, host: str) -> str:
    done = lab.run(host, ["ip", "-j", "link", "show", "eth0"])
    return json.loads(done.stdout)[0]["address"]


def counters(lab) -> dict[str, int]:
    done = lab.run("server", ["nft", "-j", "list", "counters", "table", "ip", "watch"])
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in json.loads(done.stdout)["nftables"] if "counter" in item}


def start_server(lab, log: str, n: int):
    """A fresh server and fresh counters for one way of replaying."""
    lab.run("server", ["nft", "delete", "table", "ip", "watch"], check=False)
    lab.run("server", ["nft", "-f", "-"], input=COUNTERS)
    proc = lab.start("server", [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT),
                                "--log", log], name=f"server-{n}")
    deadline = time.monotonic() + 30
    while lab.run("server", ["ss", "-Htln", f"sport = :{PORT}"]).stdout.strip() == "":
        if time.monotonic() > deadline:
            raise RuntimeError("the server never listened")
        time.sleep(0.1)
    return proc


def raw_to_ethernet(src: str, dst: str) -> None:
    """Copy a LINKTYPE_RAW pcap (IPv4 packets) as LINKTYPE_ETHERNET, zero MACs."""
    with open(src, "rb") as handle:
        data = handle.read()
    header = bytearray(data[:24])
    struct.pack_into("<I", header, 20, 1)                # LINKTYPE_ETHERNET
    out, at = [bytes(header)], 24
    while at < len(data):
        sec, usec, caplen, origlen = struct.unpack("<IIII", data[at:at + 16])
        out.append(struct.pack("<IIII", sec, usec, caplen + 14, origlen + 14)
                   + b"\0" * 12 + b"\x08\x00" + data[at + 16:at + 16 + caplen])
        at += 16 + caplen
    with open(dst, "wb") as handle:
        handle.write(b"".join(out))


def tcpreplay(lab, work: str, rec: str) -> dict:
    raw, blank, enet = (f"{work}/rec-{x}.pcap" for x in ("raw", "blank", "enet"))
    subprocess.run([PY, "-m", "dcnet.cli.elbctl", "mirror", "export", "--recording", rec,
                    "--pcap", raw], check=True, capture_output=True)
    raw_to_ethernet(raw, blank)
    subprocess.run(["tcprewrite", f"--enet-smac={mac(lab, 'inject')}",
                    f"--enet-dmac={mac(lab, 'server')}",
                    f"--srcipmap=0.0.0.0/0:{INJECT}/32", f"--dstipmap=0.0.0.0/0:{SERVER}/32",
                    "--fixcsum", f"--infile={blank}", f"--outfile={enet}"], check=True)
    done = lab.run("inject", ["tcpreplay", "--topspeed", "-i", "eth0", enet], timeout=600)
    sent = re.search(r"Successful packets:\s+(\d+)", done.stdout)
    failed = re.search(r"Failed packets:\s+(\d+)", done.stdout)
    return {"tcpreplay_sent": int(sent.group(1)) if sent else None,
            "tcpreplay_failed": int(failed.group(1)) if failed else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("tcpreplay"):
        print("tcpreplay is not installed (scripts/setup installs it)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="dcnet-mirror-tcpreplay-")
    rec = f"{work}/rec.jsonl"
    sessions = synthetic(args.sessions, args.requests)
    recording.write(rec, sessions)
    expected = args.sessions * args.requests
    result: dict = {"args": vars(args), "recorded_requests": expected}
    with Lab(topology()) as lab:
        real = f"{work}/real.pcap"
        for n, way in enumerate(("tcpreplay", "tcpreplay-no-rst", "dcnet",
                                 "tcpreplay-real-capture")):
            log = f"{work}/{way}.log"
            server = start_server(lab, log, n)
            lab.run("inject", ["nft", "delete", "table", "ip", "norst"], check=False)
            if way == "tcpreplay-no-rst":
                lab.run("inject", ["nft", "-f", "-"], input=NO_RST)
            begin = time.monotonic()
            if way == "dcnet":
                out = f"{work}/dcnet-replay"
                os.makedirs(out)
                dump = lab.start("server", ["tcpdump", "-i", "eth0", "-U", "-w", real,
                                            f"tcp dst port {PORT}"], name="tcpdump")
                time.sleep(2)                          # tcpdump is listening
                summary = replay.run_replay(rec, 1.0, f"{SERVER}:{PORT}",
                                            [lab.netns("inject")], out)
                extra = {"failed_sessions": sum(c["errors"] for c in summary["copies"])}
            elif way == "tcpreplay-real-capture":
                # veth offloads checksums: the captured packets carry partial ones
                subprocess.run(["tcprewrite", "--fixcsum", f"--infile={real}",
                                f"--outfile={real}.fixed"], check=True)
                done = lab.run("inject", ["tcpreplay", "--topspeed", "-i", "eth0",
                                          f"{real}.fixed"], timeout=600)
                sent = re.search(r"Successful packets:\s+(\d+)", done.stdout)
                extra = {"tcpreplay_sent": int(sent.group(1)) if sent else None}
            else:
                extra = tcpreplay(lab, work, rec)
            wall = time.monotonic() - begin
            time.sleep(2)            # late answers, resets and retransmissions settle
            logged = read_log(log)
            result[way] = {"requests_logged": len(logged),
                           "delivered_share": round(len(logged) / expected, 4),
                           "distinct_requests": len({e["path"] for e in logged}),
                           "wall_s": round(wall, 2), **extra, "server_counters": counters(lab)}
            server.terminate()
            server.wait(10)
            if way == "dcnet":
                dump.send_signal(signal.SIGINT)
                dump.wait(10)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
