"""One test per model validation rule: each breaks the valid base model in one way and
checks the error names the field path, the line and what is wrong."""

from __future__ import annotations

import pytest

from dcnet.model import ModelError, parse_model
from tests.unit.model_fixtures import JOB_A, model_text, read_file

pytestmark = pytest.mark.unit


def problems_of(text: str, files=None):
    with pytest.raises(ModelError) as info:
        parse_model(text, source="m.yaml", read_text=read_file(files))
    return info.value.problems


def expect(mutate, path: str, fragment: str, files=None):
    """Break the base model with ``mutate``; exactly the expected problem is reported."""
    text = model_text(mutate)
    problems = problems_of(text, files)
    matching = [p for p in problems if p.path == path and fragment in p.message]
    assert matching, f"no problem at {path!r} with {fragment!r}; got: {problems}"
    problem = matching[0]
    assert problem.source == "m.yaml"
    assert problem.line is not None and 1 <= problem.line <= len(text.splitlines())
    return problem


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def svc(i):
    return lambda d: d["services"][i]


def test_base_model_is_valid():
    model = parse_model(model_text(), source="m.yaml", read_text=read_file())
    assert model.services[0].name == JOB_A
    assert model.default_carrier.name == "bgp"
    assert [str(n) for n in model.carrier("telecom").cidrs] == ["192.0.2.0/26", "100.64.1.0/24"]


# --- document level ---------------------------------------------------------------------

def test_invalid_yaml_names_line():
    problems = problems_of("version: 1\ncarriers: [\n  name: x\n")
    assert problems[0].line is not None and "invalid YAML" in problems[0].message


def test_duplicate_key_is_rejected():
    problems = problems_of("version: 1\nversion: 1\ncarriers: []\n")
    assert problems[0].line == 2 and "duplicate key 'version'" in problems[0].message


def test_unknown_version():
    expect(lambda d: d.update(version=2), "version", "between 1 and 1")


def test_top_level_must_be_mapping():
    assert "must be a mapping" in problems_of("- 1\n- 2\n")[0].message


def test_unknown_field_is_reported_with_its_line():
    def mutate(d):
        d["services"][0]["ports"][0]["shceduler"] = "rr"
    problem = expect(mutate, "services[0].ports[0].shceduler", "unknown field")
    assert problem.line == line_of(model_text(mutate), "shceduler")


def test_missing_required_field():
    expect(lambda d: d["carriers"][0].pop("gateway"), "carriers[0]", "missing required field "
           "'gateway'")


def test_wrong_type():
    expect(lambda d: svc(0)(d)["ports"][0].update(port="eighty"), "services[0].ports[0].port",
           "must be an integer")


def test_boolean_is_not_an_integer():
    expect(lambda d: svc(0)(d)["ports"][0].update(port=True), "services[0].ports[0].port",
           "must be an integer")


def test_port_out_of_range():
    expect(lambda d: svc(0)(d)["ports"][0].update(port=70000), "services[0].ports[0].port",
           "between 1 and 65535")


def test_list_fields_must_be_lists():
    expect(lambda d: d.update(services={"a": 1}), "services", "must be a list")


# --- carriers ---------------------------------------------------------------------------

def test_bad_gateway_address():
    expect(lambda d: d["carriers"][0].update(gateway="198.51.100.300"), "carriers[0].gateway",
           "not an IP address")


def test_vip_range_with_host_bits():
    expect(lambda d: d["carriers"][0].update(vip_ranges=["198.51.100.1/26"]),
           "carriers[0].vip_ranges[0]", "host bits set")


def test_empty_vip_ranges():
    expect(lambda d: d["carriers"][0].update(vip_ranges=[]), "carriers[0].vip_ranges",
           "at least one network")


def test_reserved_routing_table():
    expect(lambda d: d["carriers"][0].update(table=254), "carriers[0].table", "reserved")


def test_bad_carrier_name():
    expect(lambda d: d["carriers"][0].update(name="China Telecom"), "carriers[0].name",
           "is not valid")


def test_uplink_name_too_long():
    expect(lambda d: d["carriers"][0].update(uplink="a-very-long-uplink0"), "carriers[0].uplink",
           "1-15 characters")


def test_duplicate_carrier_name():
    expect(lambda d: d["carriers"][1].update(name="telecom", default=True),
           "carriers[1].name", "duplicate carrier name telecom")


def test_duplicate_routing_table():
    expect(lambda d: d["carriers"][1].update(table=101), "carriers[1].table",
           "duplicate routing table 101")


def test_no_default_carrier():
    expect(lambda d: d["carriers"][1].pop("default"), "carriers", "no carrier is marked")


def test_two_default_carriers():
    expect(lambda d: d["carriers"][0].update(default=True), "carriers[1].default",
           "more than one default carrier")


def test_overlapping_vip_ranges():
    expect(lambda d: d["carriers"][1].update(vip_ranges=["198.51.100.0/24"]),
           "carriers[1].vip_ranges", "overlaps 198.51.100.0/26 of carrier 'telecom'")


def test_missing_cidr_file():
    expect(lambda d: d["carriers"][0].update(cidrs="nope.txt"), "carriers[0].cidrs",
           "cannot read CIDR list 'nope.txt'")


def test_bad_line_in_cidr_file_names_that_file_and_line():
    files = {"telecom.txt": "192.0.2.0/26\n\n# comment\n192.0.2.300/24\n"}
    problems = problems_of(model_text(), files)
    assert problems[0].source == "telecom.txt" and problems[0].line == 4
    assert "not a valid network" in problems[0].message
    assert "192.0.2.300" not in problems[0].message     # a list file's text is never echoed


# --- services ---------------------------------------------------------------------------

@pytest.mark.parametrize(("job", "fragment"), [
    ("web", "not 'tag.value'"),
    ("job.web_service.shop_cluster.prod", "lacks required tag(s): pdl, owt, cop"),
    ("service.shop_job.web_cluster.prod_pdl.r_owt.s_cop.e", "'job' is out of place"),
    ("job.Web_service.shop_cluster.prod_pdl.r_owt.s_cop.e", "must be lower-case"),
    ("job.web_team.x_service.shop_cluster.prod_pdl.r_owt.s_cop.e", "tag 'team' is not one of"),
    ("job.web_job.x_service.shop_cluster.prod_pdl.r_owt.s_cop.e", "appears twice"),
])
def test_bad_jobname(job, fragment):
    expect(lambda d: svc(0)(d).update(job=job), "services[0].job", fragment)


def test_duplicate_jobname():
    expect(lambda d: svc(1)(d).update(job=JOB_A), "services[1].job", "duplicate JOBNAME")


def test_vip_for_unknown_carrier():
    expect(lambda d: svc(0)(d)["vips"].update(unicorn="198.51.100.11"),
           "services[0].vips.unicorn", "unknown carrier 'unicorn'")


def test_vip_outside_its_carrier_range():
    expect(lambda d: svc(0)(d)["vips"].update(telecom="203.0.113.99"),
           "services[0].vips.telecom", "outside carrier 'telecom'")


def test_bad_vip_address():
    expect(lambda d: svc(0)(d)["vips"].update(telecom="not-an-ip"),
           "services[0].vips.telecom", "not an IP address")


def test_vips_must_be_a_mapping():
    expect(lambda d: svc(0)(d).update(vips=["198.51.100.10"]), "services[0].vips",
           "must map carrier names")


def test_no_vip_on_default_carrier():
    expect(lambda d: svc(0)(d)["vips"].pop("bgp"), "services[0].vips",
           "no VIP on the default carrier 'bgp'")


def test_duplicate_vip_port_across_services():
    def mutate(d):
        svc(1)(d)["vips"]["bgp"] = "203.0.113.10"
        svc(1)(d)["ports"][0]["port"] = 80
    expect(mutate, "services[1].ports[0].port", "duplicate VIP:port 203.0.113.10:80/tcp")


def test_same_port_other_protocol_is_fine():
    def mutate(d):
        svc(1)(d)["vips"]["bgp"] = "203.0.113.10"
        svc(1)(d)["ports"][0].update(port=80, protocol="udp")
    parse_model(model_text(mutate), read_text=read_file())


def test_duplicate_port_in_one_service():
    expect(lambda d: svc(0)(d)["ports"].append({"port": 80, "forward": "nat"}),
           "services[0].ports[1].port", "duplicate port tcp/80")


def test_service_without_ports():
    expect(lambda d: svc(0)(d).update(ports=[]), "services[0].ports", "at least one port")


def test_unknown_scheduler():
    expect(lambda d: svc(0)(d)["ports"][0].update(scheduler="fastest"),
           "services[0].ports[0].scheduler", "unknown scheduler 'fastest'")


def test_unknown_protocol():
    expect(lambda d: svc(0)(d)["ports"][0].update(protocol="icmp"),
           "services[0].ports[0].protocol", "'icmp' is not one of: tcp, udp, sctp")


def test_unknown_forwarding_method():
    expect(lambda d: svc(0)(d)["ports"][0].update(forward="fullnat"),
           "services[0].ports[0].forward", "is not one of: dr, nat, tun")


def test_dr_with_differing_target_port():
    expect(lambda d: svc(0)(d)["ports"][0].update(forward="dr"),
           "services[0].ports[0].target_port", "DR forwarding cannot change the port")


def test_tun_with_differing_real_server_port():
    def mutate(d):
        svc(1)(d)["ports"][0]["forward"] = "tun"
        svc(1)(d)["real_servers"][0]["port"] = 8443
    expect(mutate, "services[1].real_servers[0].port", "TUN forwarding needs the real server on "
           "the virtual port 443")


def test_real_server_port_in_multi_port_service():
    def mutate(d):
        svc(0)(d)["ports"].append({"port": 81, "forward": "nat"})
        svc(0)(d)["real_servers"][0]["port"] = 9000
    expect(mutate, "services[0].real_servers[0].port", "only allowed when the service has "
           "exactly one port")


def test_duplicate_real_server():
    expect(lambda d: svc(0)(d)["real_servers"].append({"address": "10.0.0.1"}),
           "services[0].real_servers[2].address", "duplicate real server")


def test_weight_out_of_range():
    expect(lambda d: svc(0)(d)["real_servers"][0].update(weight=-1),
           "services[0].real_servers[0].weight", "between 0 and 65535")


def test_persistence_out_of_range():
    expect(lambda d: svc(0)(d)["ports"][0].update(persistence=-5),
           "services[0].ports[0].persistence", "between 0 and")


def test_mixed_address_family_without_tun():
    expect(lambda d: svc(1)(d)["real_servers"].append({"address": "2001:db8::5"}),
           "services[1].real_servers[1].address", "only TUN forwarding can mix")


def test_http_check_needs_path():
    expect(lambda d: svc(0)(d)["health_check"].pop("path"), "services[0].health_check",
           "needs 'path'")


def test_path_only_for_http_checks():
    expect(lambda d: svc(0)(d)["health_check"].update(type="tcp"),
           "services[0].health_check.path", "only applies to http checks")


def test_check_timeout_longer_than_interval():
    expect(lambda d: svc(0)(d)["health_check"].update(timeout=5),
           "services[0].health_check.timeout", "longer than the interval")


def test_every_problem_is_reported_together():
    def mutate(d):
        d["carriers"][0]["table"] = 255
        svc(0)(d)["ports"][0]["scheduler"] = "nope"
        svc(1)(d)["vips"]["bgp"] = "198.51.100.99"
    paths = {p.path for p in problems_of(model_text(mutate))}
    assert {"carriers[0].table", "services[0].ports[0].scheduler",
            "services[1].vips.bgp"} <= paths


def test_error_text_has_file_line_and_path():
    text = model_text(lambda d: svc(0)(d)["ports"][0].update(scheduler="nope"))
    with pytest.raises(ModelError) as info:
        parse_model(text, source="m.yaml", read_text=read_file())
    line = line_of(text, "scheduler: nope")
    assert str(info.value).startswith(f"m.yaml:{line}: services[0].ports[0].scheduler: unknown")


def test_default_carrier_cannot_be_down():
    expect(lambda d: d["carriers"][1].update(down=True), "carriers[1].down",
           "default carrier cannot be marked down")


def test_other_carrier_may_be_down():
    model = parse_model(model_text(lambda d: d["carriers"][0].update(down=True)),
                        read_text=read_file())
    assert model.carrier("telecom").down and not model.carrier("bgp").down


# --- sections ---------------------------------------------------------------------------

def test_dns_default_name():
    model = parse_model(model_text(), read_text=read_file())
    assert model.dns.name(model.services[0].job) == "shop.prod.retail.sre.elb.internal"


def test_dns_names_that_collide():
    expect(lambda d: d.update(dns={"pattern": "{pdl}"}), "services[1].job",
           "DNS name retail.elb.internal collides with services[0]")


def test_dns_pattern_with_unknown_tag():
    expect(lambda d: d.update(dns={"pattern": "{team}.{job}"}), "dns.pattern",
           "unknown JOBNAME tag(s) team")


def test_dns_pattern_needs_a_placeholder():
    expect(lambda d: d.update(dns={"pattern": "www"}), "dns.pattern", "at least one {tag}")


def test_dns_pattern_giving_an_invalid_label():
    expect(lambda d: d.update(dns={"pattern": "{job}_x.{service}"}), "services[0].job",
           "is not a valid DNS label")


def test_dns_pattern_using_a_tag_a_service_lacks():
    expect(lambda d: d.update(dns={"pattern": "{jobgroup}.{job}"}), "services[0].job",
           "needs tag 'jobgroup'")


def test_dns_bad_zone():
    expect(lambda d: d.update(dns={"zone": "ELB..example"}), "dns.zone", "is not valid")


def test_unknown_section_field():
    expect(lambda d: d.update(dns={"zone": "elb.example.com", "tll": 5}), "dns.tll",
           "unknown field")


def test_lvs_rule_range_inverted():
    expect(lambda d: d.update(lvs={"rule_priority_min": 3000, "rule_priority_max": 2000}),
           "lvs.rule_priority_min", "above rule_priority_max")


def test_haproxy_listen_must_be_addresses():
    expect(lambda d: d.update(haproxy={"listen": ["nowhere"]}), "haproxy.listen",
           "not an IP address")


def test_dns_name_of_the_zone_name_server_record():
    expect(lambda d: (d.update(dns={"pattern": "{job}"}),
                      d["services"][0].update(job=JOB_A.replace("job.web_", "job.dcnet-ns_"))),
           "services[0].job", "is the zone's name server record")


def test_ns_label_is_the_dns_back_ends():
    from dcnet.dns.layout import NS_LABEL
    from dcnet.model.dns_section import NS_LABEL as MODEL_NS_LABEL

    assert MODEL_NS_LABEL == NS_LABEL
