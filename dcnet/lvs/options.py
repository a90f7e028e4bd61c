"""The LVS target's options (``--lvs-netns``, ...), declared apart from the target so
that a command line can offer every target's flags without importing the targets."""

from __future__ import annotations

from dcnet.target.base import Option

OPTIONS: tuple[Option, ...] = (
    Option("netns", "lvs-netns", "Network namespace of the director (else this one)",
           envvar="DCNET_LVS_NETNS"),
    Option("state_dir", "lvs-state-dir", "elbctl's LVS state directory: lock, "
           "registry, drain set (else /var/lib/dcnet/lvs)",
           envvar="DCNET_LVS_STATE_DIR", path=True),
    Option("exact_read", "exact-read", "Read every IPVS dest by generic netlink (sees "
           "threshold drift; slower); no fast path, no incremental read", type=bool,
           default=False, is_flag=True),
)
