"""Unit tests of lab topology parsing and validation (one test per rule)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dcnet.lab.topology import Endpoint, Host, Process, Route, Topology, TopologyError, Veth

pytestmark = pytest.mark.unit

VALID = {
    "hosts": ["h1", {"name": "r", "sysctls": {"net.ipv4.ip_forward": 1}}, "sw", "h2"],
    "bridges": [{"name": "br0", "host": "sw", "addresses": ["10.1.0.250/24"], "mtu": 1500}],
    "links": [
        {"a": {"host": "h1", "ifname": "eth0", "addresses": ["10.1.0.1/24"]},
         "b": {"host": "sw", "ifname": "p1", "bridge": "br0"}},
        {"a": {"host": "r", "ifname": "eth0", "addresses": ["10.1.0.254/24"]},
         "b": {"host": "sw", "ifname": "p2", "bridge": "br0"}},
        {"a": {"host": "r", "ifname": "eth1", "addresses": ["10.2.0.254/24", "fd00::1/64"]},
         "b": {"host": "h2", "ifname": "eth0", "addresses": ["10.2.0.1/24"], "mtu": 1400}},
    ],
    "routes": [
        {"host": "h1", "dst": "10.2.0.0/24", "via": "10.1.0.254", "metric": 10},
        {"host": "h2", "dst": "default", "via": "10.2.0.254", "dev": "eth0", "table": "main"},
    ],
    "processes": [
        {"name": "web", "host": "h2", "argv": ["python3", "-m", "http.server", "8080"],
         "ready_tcp_port": 8080, "ready_timeout": 5},
    ],
}


def variant(**changes):
    """A deep copy of VALID with top-level sections replaced or patched by callables."""
    data = copy.deepcopy(VALID)
    for key, change in changes.items():
        if callable(change):
            change(data)
        else:
            data[key] = change
    return data


def errors_of(data) -> list[str]:
    with pytest.raises(TopologyError) as info:
        Topology.from_dict(data)
    return info.value.errors


def assert_error(data, expected: str) -> None:
    errors = errors_of(data)
    assert any(expected in error for error in errors), errors


# ------------------------------------------------------------ parsing


def test_valid_topology_parses_into_frozen_dataclasses():
    topo = Topology.from_dict(VALID)
    assert topo.host_names() == ["h1", "r", "sw", "h2"]
    assert topo.hosts[1] == Host("r", (("net.ipv4.ip_forward", "1"),))
    assert topo.links[2].b == Endpoint("h2", "eth0", ("10.2.0.1/24",), 1400, None)
    assert topo.routes[1] == Route("h2", "default", "10.2.0.254", "eth0", 254, None)
    assert topo.processes[0].argv == ("python3", "-m", "http.server", "8080")
    assert topo.processes[0].ready_tcp_port == 8080
    with pytest.raises(AttributeError):
        topo.hosts[0].name = "x"


def test_from_yaml_text_and_path(tmp_path: Path):
    text = """
hosts: [a, b]
links:
  - a: {host: a, ifname: eth0, addresses: [10.3.0.1/24]}
    b: {host: b, ifname: eth0, addresses: [10.3.0.2/24]}
"""
    from_text = Topology.from_yaml(text)
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    assert Topology.from_yaml(path) == from_text
    assert Topology.from_yaml(str(path)) == from_text
    assert from_text.addresses_of("b", "eth0") == ("10.3.0.2/24",)


def test_round_trip_through_to_dict():
    topo = Topology.from_dict(VALID)
    assert Topology.from_dict(topo.to_dict()) == topo


def test_directly_constructed_topology_is_validated():
    topo = Topology(
        hosts=(Host("a"),),
        links=(Veth(Endpoint("a", "eth0"), Endpoint("zz", "eth0")),),
    )
    with pytest.raises(TopologyError, match=r"links\[0\]\.b\.host: unknown host 'zz'"):
        topo.validated()


def test_every_error_is_reported_at_once():
    data = variant(
        routes=[{"host": "n9", "dst": "10.0.0.0/33", "via": "x"}],
        processes=[{"name": "p", "host": "n8", "argv": []}],
    )
    errors = errors_of(data)
    assert len(errors) >= 5, errors
    assert "routes[0].host: unknown host 'n9'" in errors


def test_bad_yaml_is_a_topology_error():
    with pytest.raises(TopologyError, match="<yaml>"):
        Topology.from_yaml("hosts: [a\n  b: {")


# ------------------------------------------------------------ structure rules


def test_top_level_must_be_mapping():
    assert_error(["h1"], "<topology>: expected a mapping")


def test_hosts_section_required():
    assert_error({}, "<topology>.hosts: required field missing")


def test_unknown_field_is_reported_with_path():
    data = variant(links=lambda d: d["links"][1]["a"].update(adresses=["10.1.0.9/24"]))
    assert_error(data, "links[1].a.adresses: unknown field")


def test_missing_required_field():
    data = variant(links=lambda d: d["links"][0]["b"].pop("ifname"))
    assert_error(data, "links[0].b.ifname: required field missing")


def test_section_must_be_a_list():
    assert_error(variant(routes={"host": "h1"}), "routes: expected a list")


# ------------------------------------------------------------ host rules


def test_unknown_host_reference_in_link():
    data = variant(links=lambda d: d["links"][2]["b"].update(host="n9"))
    assert errors_of(data)[0] == "links[2].b.host: unknown host 'n9'"


def test_unknown_host_reference_in_bridge():
    assert_error(variant(bridges=[{"name": "br0", "host": "n9"}]),
                 "bridges[0].host: unknown host 'n9'")


def test_unknown_host_reference_in_route():
    data = variant(routes=[{"host": "n9", "dst": "default", "via": "10.0.0.1"}])
    assert_error(data, "routes[0].host: unknown host 'n9'")


def test_unknown_host_reference_in_process():
    data = variant(processes=[{"name": "p", "host": "n9", "argv": ["true"]}])
    assert_error(data, "processes[0].host: unknown host 'n9'")


def test_duplicate_host_names():
    assert_error(variant(hosts=["a", "a"]), "hosts[1].name: duplicate host 'a'")


def test_invalid_host_name():
    assert_error(variant(hosts=["h1", "bad/name"]), "hosts[1]: invalid host name 'bad/name'")


def test_host_name_too_long():
    assert_error(variant(hosts=["h" * 40]), "hosts[0]: invalid host name")


def test_empty_host_list():
    assert_error({"hosts": []}, "hosts: at least one host is required")


def test_sysctl_key_must_be_per_namespace_net_key():
    data = variant(hosts=[{"name": "h1", "sysctls": {"kernel.pid_max": 1}}])
    assert_error(data, "hosts[0].sysctls.kernel.pid_max: sysctl key must be")


def test_sysctl_value_must_be_scalar():
    data = variant(hosts=[{"name": "h1", "sysctls": {"net.ipv4.ip_forward": [1]}}])
    assert_error(data, "hosts[0].sysctls.net.ipv4.ip_forward: sysctl value must be a scalar")


# ------------------------------------------------------------ interface rules


def test_interface_name_over_15_chars():
    data = variant(links=lambda d: d["links"][0]["a"].update(ifname="a-very-long-ifname"))
    assert_error(data, "links[0].a.ifname: interface name 'a-very-long-ifname' longer than 15")


def test_interface_name_with_forbidden_characters():
    data = variant(links=lambda d: d["links"][0]["a"].update(ifname="eth/0"))
    assert_error(data, "links[0].a.ifname: invalid interface name 'eth/0'")


def test_interface_name_lo_is_reserved():
    data = variant(links=lambda d: d["links"][0]["a"].update(ifname="lo"))
    assert_error(data, "links[0].a.ifname: interface name 'lo' is reserved")


def test_bridge_name_over_15_chars():
    data = variant(bridges=[{"name": "bridge-name-too-long", "host": "sw"}])
    assert_error(data, "bridges[0].name: interface name 'bridge-name-too-long' longer than 15")


def test_duplicate_interface_on_one_host():
    data = variant(links=lambda d: d["links"][1]["b"].update(ifname="p1"))
    assert_error(data, "links[1].b.ifname: duplicate interface 'p1' on host 'sw' "
                       "(already defined at links[0].b.ifname)")


def test_veth_name_clashing_with_bridge_name():
    data = variant(links=lambda d: d["links"][0]["b"].update(ifname="br0", bridge=None))
    assert_error(data, "links[0].b.ifname: duplicate interface 'br0' on host 'sw'")


def test_unknown_bridge_on_endpoint_host():
    data = variant(links=lambda d: d["links"][0]["a"].update(bridge="br0"))
    assert_error(data, "links[0].a.bridge: unknown bridge 'br0' on host 'h1'")


def test_bridge_port_takes_no_addresses():
    data = variant(links=lambda d: d["links"][0]["b"].update(addresses=["10.1.0.7/24"]))
    assert_error(data, "links[0].b.addresses: a port of bridge 'br0' takes no addresses")


def test_mtu_out_of_range():
    data = variant(links=lambda d: d["links"][2]["b"].update(mtu=20))
    assert_error(data, "links[2].b.mtu: 20 out of range 68..65535")


def test_mtu_must_be_integer():
    assert_error(variant(bridges=[{"name": "br0", "host": "sw", "mtu": "big"}]),
                 "bridges[0].mtu: expected an integer")


# ------------------------------------------------------------ address rules


def test_bad_cidr_address():
    data = variant(links=lambda d: d["links"][0]["a"].update(addresses=["10.1.0.300/24"]))
    assert_error(data, "links[0].a.addresses[0]: invalid CIDR address '10.1.0.300/24'")


def test_address_without_prefix_length():
    data = variant(links=lambda d: d["links"][0]["a"].update(addresses=["10.1.0.1"]))
    assert_error(data, "links[0].a.addresses[0]: address '10.1.0.1' needs a prefix length")


def test_addresses_must_be_a_list():
    data = variant(links=lambda d: d["links"][0]["a"].update(addresses="10.1.0.1/24"))
    assert_error(data, "links[0].a.addresses: expected a list of CIDR addresses")


# ------------------------------------------------------------ route rules


def test_route_destination_must_be_a_network():
    data = variant(routes=[{"host": "h1", "dst": "10.2.0.1/24", "via": "10.1.0.254"}])
    assert_error(data, "routes[0].dst: invalid destination network '10.2.0.1/24'")


def test_route_gateway_must_be_an_address():
    data = variant(routes=[{"host": "h1", "dst": "10.2.0.0/24", "via": "10.1.0.254/24"}])
    assert_error(data, "routes[0].via: invalid gateway address '10.1.0.254/24'")


def test_route_needs_via_or_dev():
    assert_error(variant(routes=[{"host": "h1", "dst": "10.2.0.0/24"}]),
                 "routes[0]: a route needs 'via' or 'dev'")


def test_route_gateway_family_matches_destination():
    data = variant(routes=[{"host": "h1", "dst": "10.2.0.0/24", "via": "fd00::1"}])
    assert_error(data, "routes[0].via: gateway fd00::1 is IPv6 but dst 10.2.0.0/24 is IPv4")


def test_route_dev_must_exist_on_host():
    data = variant(routes=[{"host": "h1", "dst": "10.2.0.0/24", "dev": "eth7"}])
    assert_error(data, "routes[0].dev: unknown interface 'eth7' on host 'h1'")


def test_route_table_name_must_be_known():
    data = variant(routes=[{"host": "h1", "dst": "default", "dev": "eth0", "table": "blue"}])
    assert_error(data, "routes[0].table: unknown table name 'blue'")


def test_route_table_number_in_range():
    data = variant(routes=[{"host": "h1", "dst": "default", "dev": "eth0", "table": 0}])
    assert_error(data, "routes[0].table: 0 out of range")


def test_route_metric_not_negative():
    data = variant(routes=[{"host": "h1", "dst": "default", "dev": "eth0", "metric": -1}])
    assert_error(data, "routes[0].metric: -1 out of range")


# ------------------------------------------------------------ process rules


def test_duplicate_process_names():
    proc = {"name": "web", "host": "h1", "argv": ["true"]}
    assert_error(variant(processes=[proc, dict(proc)]), "processes[1].name: duplicate process")


def test_process_argv_must_be_non_empty_list_of_strings():
    data = variant(processes=[{"name": "p", "host": "h1", "argv": "sleep 10"}])
    assert_error(data, "processes[0].argv: expected a non-empty list of strings")


def test_process_ready_port_in_range():
    data = variant(processes=[{"name": "p", "host": "h1", "argv": ["x"], "ready_tcp_port": 70000}])
    assert_error(data, "processes[0].ready_tcp_port: 70000 out of range 1..65535")


def test_process_ready_timeout_positive():
    data = variant(processes=[{"name": "p", "host": "h1", "argv": ["x"], "ready_timeout": 0}])
    assert_error(data, "processes[0].ready_timeout: expected a positive number")


def test_process_defaults():
    topo = Topology.from_dict(variant(processes=[{"name": "p", "host": "h1", "argv": ["x"]}]))
    assert topo.processes[0] == Process("p", "h1", ("x",), None, 10.0)
