"""The model's ``mirror`` section: a valid section loads into MirrorSettings, and each
rule's error names the file, line and field path (dcnet/model/mirror_section.py)."""

from __future__ import annotations

import ipaddress

import pytest

from dcnet.model import parse_model
from tests.unit.model_fixtures import model_text, read_file
from tests.unit.test_model_rules import expect, line_of, problems_of

pytestmark = pytest.mark.unit

MIRROR = {
    "services": ["198.51.100.10:80", "203.0.113.11:443"],
    "device": "mir0", "to": "10.91.9.2", "percent": 10,
    "target": "10.200.0.1:8080", "factor": 2.5,
    "pool": {"network": "10.200.0.0/16", "via": "br0", "via_netns": "sw"},
    "anonymise": {"clients": True, "headers": ["Authorization", "cookie"]},
}


def with_mirror(**changes):
    def mutate(data):
        data["mirror"] = {**MIRROR, **changes}
        for key in [k for k, v in changes.items() if v is None]:
            del data["mirror"][key]
    return mutate


def test_a_valid_section_is_read_and_an_absent_one_is_none():
    model = parse_model(model_text(with_mirror()), source="m.yaml", read_text=read_file())
    mirror = model.mirror
    assert mirror.services == (("198.51.100.10", 80), ("203.0.113.11", 443))
    assert mirror.services_text() == ("198.51.100.10:80", "203.0.113.11:443")
    assert (mirror.device, mirror.to, mirror.to6, mirror.percent) == \
        ("mir0", ipaddress.ip_address("10.91.9.2"), None, 10)
    assert (mirror.target, mirror.factor) == (("10.200.0.1", 8080), 2.5)
    assert mirror.pool.network == ipaddress.ip_network("10.200.0.0/16")
    assert (mirror.pool.via, mirror.pool.via_netns, mirror.pool.gateway) == ("br0", "sw", None)
    assert (mirror.anonymise_clients, mirror.anonymise_headers) == \
        (True, ("authorization", "cookie"))
    assert parse_model(model_text(), read_text=read_file()).mirror is None


def test_errors_name_the_line_and_field():
    text = model_text(with_mirror(percent=0))
    problem = expect(with_mirror(percent=0), "mirror.percent", "between 1 and 100")
    assert problem.line == line_of(text, "percent: 0")
    expect(with_mirror(factor=200), "mirror.factor", "between 0.1 and 100")
    expect(with_mirror(device="a b"), "mirror.device", "interface name")
    expect(with_mirror(device=None), "mirror", "missing required field 'device'")
    expect(with_mirror(to="fd00::1"), "mirror.to", "not an IPv4 address")
    expect(with_mirror(to6="10.0.0.1"), "mirror.to6", "not an IPv6 address")
    expect(with_mirror(target="10.200.0.1"), "mirror.target", "IP:PORT")
    expect(with_mirror(target="fd00::1:80"), "mirror.target", "[IPv6]:PORT")
    expect(with_mirror(speed=2), "mirror.speed", "unknown field")
    expect(with_mirror(services=[]), "mirror.services", "at least one")
    expect(with_mirror(services=["198.51.100.10:80", "nope"]), "mirror.services[1]",
           "IP:PORT")
    expect(with_mirror(pool={"network": "10.200.0.1/16", "via": "br0"}),
           "mirror.pool.network", "host bits")
    expect(with_mirror(pool={"network": "10.200.0.0/16"}), "mirror.pool",
           "missing required field 'via'")
    expect(with_mirror(pool={"network": "10.200.0.0/16", "via": "br0", "gateway": "fd00::1"}),
           "mirror.pool.gateway", "address family")
    expect(with_mirror(anonymise={"headers": ["bad header"]}), "mirror.anonymise.headers[0]",
           "header name")
    expect(with_mirror(anonymise={"clients": "yes"}), "mirror.anonymise.clients",
           "true or false")


def test_rules_against_the_rest_of_the_model():
    # a VIP:port that no service offers (right VIP, wrong port; a VIP not in the model)
    problem = expect(with_mirror(services=["198.51.100.10:81", "198.51.100.10:80"]),
                     "mirror.services[0]", "not a TCP port of a VIP")
    assert problem.line == line_of(model_text(with_mirror(
        services=["198.51.100.10:81", "198.51.100.10:80"])), "198.51.100.10:81")
    expect(with_mirror(services=["192.0.2.99:80"]), "mirror.services[0]", "not a TCP port")
    expect(with_mirror(to=None), "mirror", "'to' (the mirror namespace's IPv4 address)")
    expect(with_mirror(target="[fd00::1]:80"), "mirror.pool.network", "address family")
    expect(with_mirror(target="10.201.0.1:80"), "mirror.pool.network", "outside")
    # with a gateway the target may lie outside the pool
    text = model_text(with_mirror(
        target="10.201.0.1:80",
        pool={"network": "10.200.0.0/16", "via": "br0", "gateway": "10.200.0.254"}))
    assert parse_model(text, read_text=read_file()).mirror.pool.gateway is not None


def test_every_problem_of_the_section_is_listed_together():
    problems = problems_of(model_text(with_mirror(percent=101, to="x", services=["1.2.3.4"])))
    assert {p.path for p in problems} >= {"mirror.percent", "mirror.to", "mirror.services[0]"}


LAB_MODEL = """version: 1
carriers:
  - {name: lab, uplink: c0, gateway: 10.93.0.1, table: 101, vip_ranges: [10.93.1.0/24],
     default: true}
services:
  - job: job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {lab: 10.93.1.2}
    ports: [{port: 8080, forward: nat}]
    real_servers: [{address: 10.93.1.3}]
mirror:
  services: ["10.93.1.2:8080"]
  device: mir0
  to: 10.93.9.2
  percent: %s
"""


def test_elbctl_mirror_rules_takes_the_section_from_the_model(tmp_path):
    from click.testing import CliRunner

    from dcnet.cli.elbctl import cli

    path = tmp_path / "model.yaml"
    path.write_text(LAB_MODEL % 25)
    done = CliRunner().invoke(cli, ["mirror", "rules", "-f", str(path)])
    assert done.exit_code == 0, done.output
    assert ('ip daddr 10.93.1.2 tcp dport 8080 jhash ip saddr . tcp sport mod 100 seed 0x0 '
            '< 25 counter name copied dup to 10.93.9.2 device "mir0"') in done.stdout
    # an option given on the command line wins over the model
    done = CliRunner().invoke(cli, ["mirror", "rules", "-f", str(path), "--percent", "100"])
    assert "jhash" not in done.stdout
    path.write_text(LAB_MODEL % 0)
    done = CliRunner().invoke(cli, ["mirror", "rules", "-f", str(path)])
    assert done.exit_code == 1
    assert f"{path}:14: mirror.percent: must be between 1 and 100, got 0" in done.stderr
    path.write_text(LAB_MODEL.split("mirror:")[0])
    done = CliRunner().invoke(cli, ["mirror", "rules", "-f", str(path)])
    assert done.exit_code == 2 and "has no mirror section" in done.stderr
