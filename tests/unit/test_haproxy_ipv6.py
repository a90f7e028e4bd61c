"""HAProxy rendering over IPv6 (pure): IPv6 VIPs bound as ``ipv6@ADDR:PORT`` per carrier,
IPv6 servers as ``[ADDR]:PORT``, mixed families, and the file's servers read back under
the same keys the model gives them (so a second plan is empty)."""

from __future__ import annotations

import pytest

from dcnet.haproxy.carry import file_servers
from dcnet.haproxy.layout import server_key
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import render
from dcnet.lab import haproxy6_lab as h6
from dcnet.lab import haproxy_lab as hlab

pytestmark = pytest.mark.unit

PATHS = Paths(run_dir="/run/dcnet-haproxy-test")


def test_ipv6_vips_servers_and_mixed_families_render_and_read_back():
    text = render(hlab.model_of(h6.model_data([1, 2], mixed=True)), PATHS).text
    web = f"{h6.JOB}:80"
    assert f"bind ipv6@{h6.VIP6['telecom']}:80" in text
    assert f"bind ipv6@{h6.VIP6['unicom']}:80" in text
    assert f"bind {h6.VIP4['telecom']}:{h6.SERVER_PORT}" in text          # v4 VIP -> v6
    assert f"server s1 [{h6.server6(1)}]:{h6.SERVER_PORT} weight 10" in text
    assert f"server s1 {h6.server4(1)}:{h6.SERVER_PORT} weight 10" in text  # v6 VIP -> v4
    servers = file_servers(text)
    assert (web, server_key(h6.server6(2), h6.SERVER_PORT)) in servers
    assert server_key(h6.server6(2), h6.SERVER_PORT) == f"[{h6.server6(2)}]:8080"
