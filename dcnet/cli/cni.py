"""``dcnet-cni``: the CNI binary's entry point.

The plugin itself arrives with the CNI issues; until then every command answers, as the
CNI spec asks of a plugin that cannot serve, with error code 50 on stdout.
"""

from __future__ import annotations

import json
import os
import sys

CNI_VERSION = "1.1.0"
ERR_PLUGIN_NOT_AVAILABLE = 50


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    json.dump({"cniVersion": CNI_VERSION, "code": ERR_PLUGIN_NOT_AVAILABLE,
               "msg": "dcnet-cni is not implemented yet",
               "details": f"CNI_COMMAND={command!r} cannot be served by this build"}, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(1)
