"""The conformance suite (tests/conformance.py) against ``--target lvs`` in the kernel lab.

The director is programmed in-process (``session.run("lvs", ...)``, no ``elbctl`` process:
each costs about a minute under emulation) with the LVS target's carrier policy routing
(``from VIP lookup TABLE`` rules, carrier default routes, ``snat_reroute``); the target
puts the VIPs on its own interface, ``elb0`` (a dummy device made here).
"""

from __future__ import annotations

import pytest

from tests import conformance

# pyroute2's sockets left to the garbage collector in the guest (as in test_lvs.py)
pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture(scope="module")
def director(tmp_path_factory):
    with conformance.traffic_lab() as lab:
        ipr = lab.iproute("director")                 # in-process: no ip process
        ipr.link("add", ifname="elb0", kind="dummy")
        ipr.link("set", index=ipr.link_lookup(ifname="elb0")[0], state="up")
        options = {"netns": lab.netns("director"),
                   "state_dir": str(tmp_path_factory.mktemp("lvs-state"))}
        yield conformance.Director("lvs", options, lab)


class TestLVSConformance(conformance.Conformance):
    pass
