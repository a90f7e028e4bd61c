"""Kernel-lab smoke tests: program one IPVS service with pyroute2 and read it back.

Runs where the kernel has IPVS (directly, or in the virtme-ng guest booted by
dcnet.lab.pytest_kernel_lab).  Only control-plane netlink calls; no traffic is sent.
"""

import socket
from pathlib import Path

import pytest

VIP, VPORT = "192.0.2.10", 80  # TEST-NET-1
RIP, RPORT = "198.51.100.20", 8080  # TEST-NET-2
FWD_NAT = 0  # IP_VS_CONN_F_MASQ


def _attr(msg, *path):
    return msg.get_nested(*path)


def _find_service(ipvs, IPVSService):
    for msg in ipvs.service("dump"):
        svc = IPVSService.from_message(msg)
        if (
            svc.get("addr") == VIP
            and svc.get("port") == VPORT
            and svc.get("protocol") == socket.IPPROTO_TCP
        ):
            return msg
    return None


@pytest.mark.kernel
def test_ipvs_service_roundtrip():
    from pyroute2 import IPVS, IPVSDest, IPVSService

    service = IPVSService(
        addr=VIP, port=VPORT, protocol=socket.IPPROTO_TCP, sched_name="rr"
    )
    dest = IPVSDest(addr=RIP, port=RPORT, weight=5, fwd_method=FWD_NAT)
    with IPVS() as ipvs:
        ipvs.service("add", service=service)
        try:
            ipvs.dest("add", service=service, dest=dest)

            msg = _find_service(ipvs, IPVSService)
            assert msg is not None, "service not found in dump after add"
            sched = _attr(msg, "IPVS_CMD_ATTR_SERVICE", "IPVS_SVC_ATTR_SCHED_NAME")
            assert sched == "rr"

            dests = list(ipvs.dest("dump", service=service))
            assert len(dests) == 1
            d = dests[0]
            assert _attr(d, "IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_ADDR") == RIP
            assert _attr(d, "IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_PORT") == RPORT
            assert _attr(d, "IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_WEIGHT") == 5
            method = _attr(d, "IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_FWD_METHOD")
            assert method & 0x7 == FWD_NAT
        finally:
            ipvs.service("del", service=service)
        assert _find_service(ipvs, IPVSService) is None, "service still present after del"


# ip_vs is listed too: /proc/net/ip_vs only exists once it is loaded, and a host with
# netem but without IPVS must send this test to the guest as well.
@pytest.mark.kernel("sch_netem", "ip_vs")
def test_netem_loads_and_ipvs_proc():
    # the plugin (on the host or in the guest) modprobe'd both, or failed the test
    assert Path("/sys/module/sch_netem").exists()
    assert Path("/proc/net/ip_vs").exists()
