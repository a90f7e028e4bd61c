"""dcnet-init's Pushgateway push (pure parts): the group URL and the text it sends."""

from __future__ import annotations

import base64

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcnet.init.push import render, url_of

pytestmark = pytest.mark.unit


def test_group_url_encodes_label_values_as_the_pushgateway_reads_them():
    assert url_of("127.0.0.1:9091", "job.a_b", "pod-1") == \
        "http://127.0.0.1:9091/metrics/job/dcnet_init/jobname/job.a_b/instance/pod-1"
    assert url_of("https://gw.example/", "", "x y").endswith(
        "/metrics/job/dcnet_init/jobname@base64/=/instance/x%20y")
    slashed = url_of("gw:9091", "a/b", "i")
    assert f"/jobname@base64/{base64.urlsafe_b64encode(b'a/b').decode()}/" in slashed


def test_render_is_valid_text_and_leaves_out_unknown_values():
    text = render({"dcnet_init_registered": 1, "dcnet_init_exit_code": None,
                   "dcnet_init_hook_failures": {"start": 0, "drain": 2}})
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    assert got == {("dcnet_init_registered", ()): 1.0,
                   ("dcnet_init_hook_failures", (("sequence", "start"),)): 0.0,
                   ("dcnet_init_hook_failures", (("sequence", "drain"),)): 2.0}
