"""netbench's ``nft-lb`` mode (root): client -> VIP on a director running dcnet's nft
target -> real server, over IPv4 and IPv6.

One short run of the mode through the engine, as ``netbench run`` does it (every kind of
test, 1 s, one round, both families): the mode builds, every sample moved traffic to
the VIP of its family, nothing is left. A second test builds the mode alone and checks
the path itself: the client has no route to the real server (so a sample can only have
crossed the director's DNAT), the director's ``table inet dcnet`` holds the model's
services of both families, and connections to each VIP reach the real server's
connection-rate server. Traffic goes only to addresses inside the namespaces the tests
made.
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap

import pytest

from dcnet.model import parse_model
from dcnet.netbench import engine, modes, nftmode, results, sampler, sockperf
from dcnet.netbench.buildcontext import DEFAULT_PORTS, DEFAULT_PORTS_V6
from dcnet.netbench.definition import loads
from dcnet.sysio import netns, proc

pytestmark = pytest.mark.netns

NFT_RUN = textwrap.dedent("""\
    netbench: 1
    name: nft-lb
    baseline: nft-lb
    repeats: 1
    warmup_rounds: 0
    modes: [nft-lb]
    families: [ipv4, ipv6]
    tests:
      - {name: tcp-1, kind: tcp, duration: 1, omit: 0}
      - {name: udp, kind: udp, duration: 1, omit: 0, bitrate: 100M}
      - {name: latency, kind: latency, protocol: udp, duration: 1}
      - {name: conn-rate, kind: connrate, duration: 1}
      - {name: rr, kind: rr, protocol: udp, duration: 1}
    """)
TARGETS = {"ipv4": nftmode.VIP, "ipv6": nftmode.VIP6}


def test_the_model_has_a_tcp_and_udp_port_per_benchmark_port_of_each_family():
    model = parse_model(nftmode.model_text({"ipv4": "10.71.1.2",
                                            "ipv6": "fd00:6e62:71:1::2"}), "m.yaml")
    by_vip = {str(s.vips[0][1]): s for s in model.services}
    assert set(by_vip) == {nftmode.VIP, nftmode.VIP6}
    for vip, ports in ((nftmode.VIP, DEFAULT_PORTS), (nftmode.VIP6, DEFAULT_PORTS_V6)):
        service = by_vip[vip]
        assert {(p.port, p.protocol.value) for p in service.ports} == {
            (port, protocol) for port in ports.values() for protocol in ("tcp", "udp")}
        assert {p.scheduler for p in service.ports} == {nftmode.SCHEDULER}
        assert len(service.real_servers) == 1


@pytest.fixture(scope="module")
def nft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("netbench-nft")
    outcome = engine.run(loads(NFT_RUN, "nft-lb.yaml"), str(out))
    return outcome, results.load(outcome.path)


def test_the_mode_runs_every_test_through_the_vip_of_each_family(nft_run):
    outcome, data = nft_run
    mode = data["modes"]["nft-lb"]
    assert mode["status"] == "ok", mode
    assert outcome.state == "complete"
    assert [s["error"] for s in data["samples"] if not s["ok"]] == []
    latency_v6 = sockperf.ipv6_unsupported(data["environment"]["tools"]["sockperf"]) is None
    cells = {(s["family"], s["test"]) for s in data["samples"]}
    for family, target in TARGETS.items():
        assert mode["families"][family]["status"] == "ok"
        assert mode["families"][family]["target"] == target
        tests = {"tcp-1", "udp", "conn-rate", "rr"} | (
            {"latency"} if family == "ipv4" or latency_v6 else set())
        assert {test for fam, test in cells if fam == family} == tests
    for sample in data["samples"]:
        if sample["kind"] in ("tcp", "udp"):
            assert sample["metrics"]["bytes"] > 0
            assert sample["details"]["remote_host"] == TARGETS[sample["family"]]
        elif sample["kind"] == "connrate":
            assert sample["metrics"]["connections"] > 0
    assert mode["notes"]["nft_changes"] > 0
    assert mode["server_netns"].endswith("-r")


def test_the_run_tears_everything_down(nft_run):
    _, data = nft_run
    assert data["run"]["teardown"]["namespaces_left"] == []
    assert not set(data["modes"]["nft-lb"]["namespaces"]) & set(netns.list_names())


def test_the_path_crosses_the_directors_nft_dnat(tmp_path):
    with contextlib.ExitStack() as stack:
        context = modes.BuildContext(stack, str(tmp_path), str(tmp_path))
        built = modes.build("nft-lb", context, ("ipv4", "ipv6"))
        live = built["ipv4"]
        lab = context.labs[0]
        # the client cannot reach a real server except through the VIP
        for family in ("ipv4", "ipv6"):
            real = built[family].bind_address
            done = proc.run(["ping", "-n", "-c", "1", "-W", "1", real],
                            netns=live.client_ns, check=False, timeout=10.0)
            assert done.returncode != 0, done.stdout
        # the director holds dcnet's table with both families' services
        # (flat VIP:ports: elements of the flat4 / flat6 maps, dcnet.nft.flat)
        listing = lab.run("d", ["nft", "-j", "list", "map", "inet", "dcnet", "flat4"])
        assert f'"{nftmode.VIP}"' in listing.stdout
        listing6 = lab.run("d", ["nft", "-j", "list", "map", "inet", "dcnet", "flat6"])
        assert f'"{nftmode.VIP6}"' in listing6.stdout
        json.loads(listing.stdout)
        # connections to each VIP reach the real server's connection-rate server
        for family, one in built.items():
            one.wait_reachable()
            argv, protocol = sampler.server_argv("connrate", one)
            one.start_server("connrate", argv, protocol, one.ports["connrate"])
            # nothing listens on the director: without DNAT this is refused; the
            # connection-rate server accepts and closes, so the client reads EOF
            for _ in range(3):
                assert netns.run_in(one.client_ns, _connect_and_read, one.target,
                                    one.ports["connrate"]) == b"", family
    assert not set(lab.netns_names) & set(netns.list_names())


def _connect_and_read(address: str, port: int) -> bytes:
    """Connect to address:port and read until the server closes (20 s bound: a wait,
    not a measurement)."""
    with socket.create_connection((address, port), timeout=20.0) as conn:
        return conn.recv(64)
