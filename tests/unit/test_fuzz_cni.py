"""Property tests of the CNI config parser on mutated configs, and the real binary on a few.

In process (hypothesis, deterministic): ``decode_conf`` + ``load_conf`` +
``runtime_requests`` on mutated host-gw and macvlan configs (alone or in a conflist) and
on mutated CNI_ARGS either accept the input or raise ``CniError`` with a code, never
anything else, and a bad value (code 7) names its field. Through the real ``dcnet-cni``
(CNI_COMMAND=ADD, a namespace path that does not exist, every directory of the config
under a temporary root): the answer on stdout is a CNI error JSON with a code, stderr
has no traceback, the code is never INTERNAL (an unexpected exception), and neither the
temporary tree nor the host's links change.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcnet.cni.args import parse_args
from dcnet.cni.config import load_conf, runtime_requests
from dcnet.cni.errors import INTERNAL, INVALID_CONFIG, CniError
from dcnet.cni.skel import decode_conf
from tests.unit.test_fuzz_model import tree_digest
from tests.unit.test_fuzz_mutations import CNI_BASE, CNI_MACVLAN, cni_inputs, mutate_data

pytestmark = pytest.mark.unit

CI = settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
CNI_BIN = os.path.join(os.path.dirname(sys.executable), "dcnet-cni")
MEMORY_CAP = 1 << 30     # address space of one plugin run: far above need, far below a leak


def parse_outcome(data: bytes, cni_args: str = "") -> object:
    """What the plugin's parsing makes of stdin ``data``: a NetConf or the CniError."""
    try:
        conf = load_conf(decode_conf(data))
        runtime_requests(conf, parse_args(cni_args))
        return conf
    except CniError as exc:
        return exc


# a bad value (code 7) names its field: the location, for a JSON config
NAMES_A_FIELD = re.compile(r"invalid network config: [\w.\[\]]+: |missing network name|"
                           r"invalid characters found in network name")


def check_cni_outcome(outcome: object) -> None:
    if isinstance(outcome, CniError):
        assert isinstance(outcome.code, int) and outcome.code != INTERNAL
        assert outcome.msg
        if outcome.code == INVALID_CONFIG:
            assert NAMES_A_FIELD.match(outcome.msg), outcome.msg
        json.dumps(outcome.to_json("1.1.0"))


@CI
@given(cni_inputs())
def test_mutated_configs_parse_or_fail_with_a_cni_error(data):
    check_cni_outcome(parse_outcome(data))


CNI_ARGS = st.one_of(
    st.text(max_size=60),
    st.lists(st.tuples(st.sampled_from(["IP", "MAC", "K8S_POD_NAME", "IgnoreUnknown", "",
                                        "X"]),
                       st.text(max_size=20)), max_size=4).map(
        lambda pairs: ";".join(f"{k}={v}" for k, v in pairs)),
)


@CI
@given(CNI_ARGS)
def test_mutated_cni_args_parse_or_fail_with_a_cni_error(text):
    check_cni_outcome(parse_outcome(json.dumps(CNI_BASE).encode(), text))


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def host_links() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


# A few fixed mutations, each refused for a different reason, through the real binary.
BINARY_CASES = [
    ("truncated", json.dumps(CNI_BASE).encode()[:40]),
    ("not-json", b"\xff\xfe{\x00"),
    ("huge-mtu", json.dumps(mutate_data(CNI_BASE, ("mtu",), "replace", 2**70)).encode()),
    ("bad-cidr", json.dumps(mutate_data(CNI_BASE, ("clusterCIDR",), "replace",
                                        "10.0.0.1/33")).encode()),
    ("bridge-list", json.dumps(mutate_data(CNI_BASE, ("bridge",), "listify", None)).encode()),
    ("deep", json.dumps(mutate_data(CNI_BASE, ("store",), "replace",
                                    [[[[[[[[[[[]]]]]]]]]]])).encode()),
    ("macvlan-master", json.dumps(mutate_data(CNI_MACVLAN, ("master",), "replace",
                                              "x" * 40)).encode()),
    ("macvlan-dhcp", json.dumps(mutate_data(CNI_MACVLAN, ("dhcp",), "replace", "yes")).encode()),
    ("conflist-empty", json.dumps({"cniVersion": "1.1.0", "name": "l", "plugins": []}).encode()),
    ("valid-but-no-netns", json.dumps(CNI_BASE).encode()),
]


@pytest.mark.parametrize(("case", "stdin"), BINARY_CASES, ids=[c for c, _ in BINARY_CASES])
def test_real_plugin_answers_mutated_configs_with_an_error_code(case, stdin):
    with tempfile.TemporaryDirectory() as tmp:
        text = stdin.decode("utf-8", "replace").replace("/nonexistent", tmp)
        before, links = tree_digest(tmp), host_links()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "ADD",
               "CNI_CONTAINERID": "fuzz0001", "CNI_NETNS": os.path.join(tmp, "no-netns"),
               "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
        result = subprocess.run([CNI_BIN], input=text.encode("utf-8", "surrogateescape"),
                                capture_output=True, env=env, timeout=60,
                                preexec_fn=_cap_memory)
        assert result.returncode == 1, result
        answer = json.loads(result.stdout)
        assert isinstance(answer["code"], int) and answer["code"] != INTERNAL, answer
        assert answer["msg"]
        assert b"Traceback" not in result.stderr
        assert tree_digest(tmp) == before
        assert host_links() == links
