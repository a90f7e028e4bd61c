"""The CNI binary's main: the plugin of the config's mode behind the skeleton, light imports.

``main`` is what the installed ``dcnet`` launcher runs (``python -I -S``): it imports the
skeleton and a small router that hands each command to the mode's plugin object,
``HostGw`` (``dcnet.cni.hostgw``) or ``Macvlan`` (``dcnet.cni.macvlan``, a thin client of
the node agent), imported only when that mode is asked for. No pyroute2, click, yaml or
jinja2 on this path; it exits with the skeleton's code. STATUS run by the C shim's
fallback (``DCNET_FALLBACK`` set: no agent served the invocation) succeeds when the mode
says so but reports the fallback-only operation on stderr.
"""

from __future__ import annotations

import os
import sys

FALLBACK_ENV = "DCNET_FALLBACK"  # set by the C shim when it execs this plugin itself


class ModeRouter:
    """Dispatches each CNI command to the plugin of ``mode`` (config validation, including
    an unknown mode, stays with the plugin's own ``load_conf``)."""

    def _plugin(self, args):
        if args.conf.get("mode") == "macvlan":
            from dcnet.cni.macvlan import Macvlan

            return Macvlan()
        from dcnet.cni.hostgw import HostGw

        return HostGw()

    def add(self, args):
        return self._plugin(args).add(args)

    def delete(self, args):
        return self._plugin(args).delete(args)

    def check(self, args):
        return self._plugin(args).check(args)

    def status(self, args):
        answer = self._plugin(args).status(args)
        why = os.environ.get(FALLBACK_ENV)
        if why:  # the shim found no agent to run this: every invocation pays a start-up
            sys.stderr.write(f"dcnet: STATUS: fallback-only: {why}; every CNI invocation "
                             "starts the Python plugin (is dcnet-agent running and "
                             "serving CNI invocations on this node?)\n")
        return answer

    def gc(self, args):
        return self._plugin(args).gc(args)


def main() -> None:
    from dcnet.cni.skel import dispatch

    sys.exit(dispatch(ModeRouter()))


if __name__ == "__main__":
    main()
