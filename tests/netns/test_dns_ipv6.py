"""AAAA answers per carrier with a real named (issue #21): carrier client lists holding
IPv4 and IPv6 prefixes, clients querying over IPv4 and over IPv6.

Lab: host ``dns`` runs named (listening on IPv4 and on its IPv6 link addresses) with a
link to each client; ``cli-telecom`` and ``cli-unicom`` have an IPv4 and an IPv6 address
inside their carrier's list, ``cli-none`` addresses inside no list (the default view).
The model is tests/unit/test_dns_ipv6.py's: telecom is dual stack, unicom has IPv4 VIPs
only (it answers AAAA with the default line's IPv6 VIP, or nothing where the default line
has none), bgp is the default line. Every query goes from a lab client to the lab's
named, by both families, for A and AAAA, and must get exactly its view's records.
"""

from __future__ import annotations

import sys

import pytest

from dcnet.dns.backend import DNSTarget
from dcnet.lab.dns_lab import dig, make_rndc_key, start_named
from dcnet.model import load_model
from dcnet.sysio import proc
from tests.unit.test_dns_ipv6 import CIDRS, EXPECTED, MODEL, PUSH, WEB, ZONE

pytestmark = pytest.mark.netns

# client -> ((server v4, client v4), (server v6, client v6)), and the view it must get
CLIENTS = {
    "telecom": (("192.0.2.1", "192.0.2.2"), ("2001:db8:c1::1", "2001:db8:c1::2")),
    "unicom": (("192.0.2.65", "192.0.2.66"), ("2001:db8:c2::1", "2001:db8:c2::2")),
    "none": (("10.99.0.1", "10.99.0.2"), ("fd00:99::1", "fd00:99::2")),
}
VIEW = {"telecom": "telecom", "unicom": "unicom", "none": "bgp"}
LISTEN = ",".join(["any", *(v6[0] for _v4, v6 in CLIENTS.values())])


def topology() -> dict:
    links = [{"a": {"host": "dns", "ifname": f"to-{c}",
                    "addresses": [f"{v4[0]}/26", f"{v6[0]}/64"]},
              "b": {"host": f"cli-{c}", "ifname": "eth0",
                    "addresses": [f"{v4[1]}/26", f"{v6[1]}/64"]}}
             for c, (v4, v6) in CLIENTS.items()]
    return {"hosts": ["dns", *(f"cli-{c}" for c in CLIENTS)], "links": links}


@pytest.fixture
def dns(lab_factory, tmp_path):
    lab = lab_factory(topology())
    model_dir, bind_dir = tmp_path / "model", tmp_path / "bind"
    model_dir.mkdir()
    (model_dir / "elb.yaml").write_text(MODEL)
    for name, text in CIDRS.items():
        (model_dir / name).write_text(text)
    make_rndc_key(str(bind_dir))
    netns = lab.netns("dns")
    done = proc.run([sys.executable, "-m", "dcnet.cli.elbctl", "render", "dns", "-f",
                     str(model_dir / "elb.yaml"), "-o", str(bind_dir)], netns=netns,
                    check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                      "DCNET_DNS_DIR": str(bind_dir),
                                      "DCNET_DNS_LISTEN": LISTEN})
    assert done.returncode == 0, done.stdout + done.stderr
    target = DNSTarget(directory=str(bind_dir), netns=netns, listen=LISTEN)
    start_named(lab, "dns", str(bind_dir), target.rndc)
    return lab, target, load_model(model_dir / "elb.yaml")


def test_clients_of_each_carrier_get_their_views_a_and_aaaa_over_both_families(dns):
    lab, target, model = dns
    got, want = {}, {}
    for client, pairs in CLIENTS.items():
        for family, (server, source) in zip((4, 6), pairs, strict=True):
            for name in (WEB, PUSH):
                for rtype in ("A", "AAAA"):
                    key = (client, family, name, rtype)
                    got[key] = dig(lab, f"cli-{client}", server, f"{name}.{ZONE}", rtype,
                                   source=source)
                    expected = EXPECTED[VIEW[client]][name].get(rtype)
                    want[key] = [expected] if expected else []
    assert got == want
    # the IPv4-only line's IPv6 clients: the default line's AAAA, and none for push
    assert got[("unicom", 6, WEB, "AAAA")] == ["2001:db8:30::10"]
    assert got[("unicom", 6, PUSH, "AAAA")] == []
    assert target.plan(model).empty            # render and apply agree: no changes
