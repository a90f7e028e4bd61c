"""The CNI binary's main: the host-gw plugin behind the skeleton, with only light imports.

``main`` is what the installed ``dcnet`` launcher runs (``python -I -S``): it imports the
skeleton and the plugin (stdlib ``json``, ``_socket``, ``struct``, ``fcntl`` and dcnet's
own small modules; no pyroute2, click, yaml or jinja2) and exits with the skeleton's code.
"""

from __future__ import annotations

import sys


def main() -> None:
    from dcnet.cni.hostgw import HostGw
    from dcnet.cni.skel import dispatch

    sys.exit(dispatch(HostGw()))


if __name__ == "__main__":
    main()
