"""``dcnet-agent``: the node agent's entry point (DHCP leases, host-gw routes).

The agent arrives with the CNI issues; this build says so and exits non-zero.
"""

from __future__ import annotations

import sys


def main() -> None:
    print("dcnet-agent: not implemented yet in this build", file=sys.stderr)
    sys.exit(1)
