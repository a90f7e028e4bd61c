"""``netbench``: the network benchmark runner's entry point.

The harnesses arrive with the netbench issue; this build says so and exits non-zero.
"""

from __future__ import annotations

import sys


def main() -> None:
    print("netbench: not implemented yet in this build", file=sys.stderr)
    sys.exit(1)
