"""Unit tests of the CNI core: skeleton validation, versions, CNI_ARGS, config, JSON."""

from __future__ import annotations

import io
import json

import pytest

from dcnet.cni import cjson, skel
from dcnet.cni import version as versions
from dcnet.cni.args import parse_args
from dcnet.cni.config import load_conf, pick_plugin, runtime_requests
from dcnet.cni.errors import CniError

pytestmark = pytest.mark.unit

CONF = {"cniVersion": "1.1.0", "name": "podnet", "type": "dcnet", "clusterCIDR": "10.244.0.0/16"}
FULL_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
CANONICAL = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "dcn1", "mac": "0a:59:0a:f4:01:02"},
                   {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "mtu": 1400,
                    "sandbox": "/run/netns/x"}],
    "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400}],
    "dns": {},
}


class FakePlugin:
    """Records calls; returns a canned result for ADD."""

    def __init__(self, error: Exception | None = None):
        self.calls: list[str] = []
        self.error = error

    def _do(self, args):
        self.calls.append(args.command)
        if self.error:
            raise self.error
        return json.loads(json.dumps(CANONICAL)) if args.command == "ADD" else None

    add = delete = check = status = gc = _do


def run(env: dict, conf: dict | str | None = None, plugin: FakePlugin | None = None):
    plugin = plugin or FakePlugin()
    data = conf if isinstance(conf, str) else json.dumps(conf if conf is not None else CONF)
    out, err = io.StringIO(), io.StringIO()
    code = skel.dispatch(plugin, env, io.BytesIO(data.encode()), out, err)
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None), plugin, err.getvalue()


# ---------------------------------------------------------------- environment


@pytest.mark.parametrize(("command", "missing"), [
    ("ADD", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
    ("CHECK", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
    ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
    ("GC", ["CNI_PATH"]),
    ("STATUS", ["CNI_PATH"]),
])
def test_missing_env_is_code_4_naming_every_variable(command, missing):
    code, out, plugin, _ = run({"CNI_COMMAND": command})
    assert code == 1 and out["code"] == 4 and not plugin.calls
    assert out["msg"] == f"required env variables [{','.join(missing)}] missing"


def test_del_does_not_need_netns():
    env = dict(FULL_ENV, CNI_COMMAND="DEL")
    del env["CNI_NETNS"]
    code, out, plugin, _ = run(env)
    assert code == 0 and out is None and plugin.calls == ["DEL"]


def test_version_needs_only_the_command_and_ignores_stdin():
    code, out, _, _ = run({"CNI_COMMAND": "VERSION"}, "not json")
    assert code == 0 and out == {"cniVersion": "1.1.0",
                                 "supportedVersions": list(versions.SUPPORTED)}


def test_no_command_prints_about_on_stderr():
    code, out, _, err = run({})
    assert code == 0 and out is None and "CNI protocol versions supported" in err


def test_unknown_command_is_code_4():
    code, out, _, _ = run(dict(FULL_ENV, CNI_COMMAND="FROB"))
    assert code == 1 and out["code"] == 4 and "unknown CNI_COMMAND" in out["msg"]


@pytest.mark.parametrize("container_id", ["-abc", "a b", "x/y", "ä"])
def test_invalid_container_id_is_code_4(container_id):
    code, out, plugin, _ = run(dict(FULL_ENV, CNI_CONTAINERID=container_id))
    assert code == 1 and out["code"] == 4 and "containerID" in out["msg"] and not plugin.calls


@pytest.mark.parametrize("ifname", ["", ".", "..", "a/b", "a:b", "a b", "x" * 16])
def test_invalid_ifname_is_code_4(ifname):
    env = dict(FULL_ENV, CNI_IFNAME=ifname)
    code, out, plugin, _ = run(env)
    assert code == 1 and out["code"] == 4 and not plugin.calls


def test_ifname_of_15_chars_is_fine():
    code, _, plugin, _ = run(dict(FULL_ENV, CNI_IFNAME="x" * 15))
    assert code == 0 and plugin.calls == ["ADD"]


# ---------------------------------------------------------------- config and versions


@pytest.mark.parametrize(("conf", "code"), [
    ("{not json", 6), ("[1, 2]", 6), ("", 6),
    (json.dumps({"cniVersion": "1.1.0", "type": "dcnet"}), 7),
    (json.dumps(dict(CONF, name="bad name")), 7),
    (json.dumps(dict(CONF, cniVersion="9.9.9")), 1),
    (json.dumps(dict(CONF, cniVersion="0.2.0")), 1),
    (json.dumps({k: v for k, v in CONF.items() if k != "cniVersion"}), 1),  # means 0.1.0
    (json.dumps(dict(CONF, cniVersion="one")), 6),
])
def test_bad_stdin_gets_the_right_code_and_no_call(conf, code):
    status, out, plugin, _ = run(FULL_ENV, conf)
    assert status == 1 and out["code"] == code and not plugin.calls


@pytest.mark.parametrize(("command", "minimum"), [("CHECK", "0.4.0"), ("GC", "1.1.0"),
                                                   ("STATUS", "1.1.0")])
def test_commands_refused_below_their_minimum_version(command, minimum):
    below = {"0.4.0": "0.3.1", "1.1.0": "1.0.0"}[minimum]
    code, out, plugin, _ = run(dict(FULL_ENV, CNI_COMMAND=command), dict(CONF, cniVersion=below))
    assert out["code"] == 1 and f"does not allow {command}" in out["msg"] and not plugin.calls
    code, out, plugin, _ = run(dict(FULL_ENV, CNI_COMMAND=command),
                               dict(CONF, cniVersion=minimum))
    assert code == 0 and plugin.calls == [command]


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_add_result_is_printed_in_the_config_version(version):
    code, out, _, _ = run(FULL_ENV, dict(CONF, cniVersion=version))
    assert code == 0 and out["cniVersion"] == version
    legacy = version in ("0.3.0", "0.3.1", "0.4.0")
    assert ("version" in out["ips"][0]) == legacy
    if legacy:
        assert out["ips"][0]["version"] == "4"
    assert ("mtu" in out["interfaces"][1]) == (version == "1.1.0")
    assert ("mtu" in out["routes"][0]) == (version == "1.1.0")
    assert out["ips"][0]["address"] == "10.244.1.2/24"


def test_error_json_carries_the_config_version_and_plugin_errors_pass_through():
    plugin = FakePlugin(CniError(11, "try later", "because"))
    code, out, _, err = run(FULL_ENV, dict(CONF, cniVersion="0.4.0"), plugin)
    assert code == 1 and out == {"cniVersion": "0.4.0", "code": 11, "msg": "try later",
                                 "details": "because"}
    assert "try later" in err


def test_unexpected_exception_becomes_code_999():
    code, out, _, _ = run(FULL_ENV, CONF, FakePlugin(ZeroDivisionError("boom")))
    assert code == 1 and out["code"] == 999 and "ZeroDivisionError" in out["msg"]


def test_conflist_on_stdin_uses_the_dcnet_entry_with_injected_name_and_version():
    conflist = {"cniVersion": "1.0.0", "name": "podnet",
                "plugins": [{"type": "dcnet", "mtu": 1400}, {"type": "portmap"}]}
    picked = pick_plugin(conflist)
    assert picked["name"] == "podnet" and picked["cniVersion"] == "1.0.0"
    assert load_conf(picked).mtu == 1400
    code, out, _, _ = run(FULL_ENV, conflist)
    assert code == 0 and out["cniVersion"] == "1.0.0"


def test_conflist_without_dcnet_is_code_7():
    with pytest.raises(CniError) as caught:
        pick_plugin({"name": "x", "plugins": [{"type": "bridge"}]})
    assert caught.value.code == 7


def test_result_conversion_round_trip_from_legacy():
    legacy = versions.convert(CANONICAL, "0.4.0")
    back = versions.to_canonical(legacy)
    assert back["ips"] == CANONICAL["ips"]
    assert versions.convert(back, "1.0.0")["interfaces"][1] == {
        "name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/run/netns/x"}


def test_to_canonical_rejects_bad_prev_result():
    with pytest.raises(CniError) as caught:
        versions.to_canonical({"ips": "nope"})
    assert caught.value.code == 6


# ---------------------------------------------------------------- CNI_ARGS


def test_cni_args_kubelet_style():
    args = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;"
                      "K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar")
    assert args["K8S_POD_NAME"] == "web-0" and "FOO" not in args


@pytest.mark.parametrize("text", ["FOO=bar", "K8S_POD_NAME", "a=b=c", "IgnoreUnknown=maybe",
                                  "IgnoreUnknown=0;FOO=1"])
def test_cni_args_errors_are_code_4(text):
    with pytest.raises(CniError) as caught:
        parse_args(text)
    assert caught.value.code == 4


# ---------------------------------------------------------------- dcnet config


@pytest.mark.parametrize(("change", "field"), [
    ({"mode": "vxlan"}, "mode"), ({"mtu": 20}, "mtu"), ({"mtu": "1500"}, "mtu"),
    ({"bridge": "x" * 16}, "bridge"), ({"clusterCIDR": "10.244.0.1/16"}, "clusterCIDR"),
    ({"clusterCIDR": "10.244.0.0/16", "subnetLen": 12}, "subnetLen"),
    ({"dataDir": "relative"}, "dataDir"), ({"type": "bridge"}, "type"),
    ({"runtimeConfig": []}, "runtimeConfig"), ({"store": "file"}, "store"),
    ({"cni.dev/valid-attachments": [{"containerID": "a"}]}, "cni.dev/valid-attachments"),
])
def test_bad_config_fields_are_named_with_code_7(change, field):
    with pytest.raises(CniError) as caught:
        load_conf(dict(CONF, **change))
    assert caught.value.code == 7 and field in caught.value.msg


def test_runtime_config_ips_and_mac_and_cni_args_ip():
    conf = load_conf(dict(CONF, runtimeConfig={"ips": ["10.244.1.9/24"],
                                               "mac": "0a:00:00:00:00:01"}))
    assert runtime_requests(conf, {}) == (0x0AF40109, "0a:00:00:00:00:01")
    assert runtime_requests(load_conf(CONF), {"IP": "10.244.1.7"})[0] == 0x0AF40107
    with pytest.raises(CniError):
        runtime_requests(load_conf(dict(CONF, runtimeConfig={"mac": "01:00:00:00:00:01"})), {})


# ---------------------------------------------------------------- cjson


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "\\u00e9", true, null, {"b": -300.0}]}',
                                  " [] ", '"s"', '{"nested": {"x": [[], {}]}}'])
def test_cjson_matches_stdlib(text):
    assert cjson.loads(text) == json.loads(text)
    assert cjson.dumps(cjson.loads(text)) == json.dumps(json.loads(text))


@pytest.mark.parametrize("text", ["{", '{"a":1}x', "", "NaN", "[1,]", b"\xff"])
def test_cjson_rejects_what_stdlib_rejects(text):
    with pytest.raises(ValueError):
        cjson.loads(text)
