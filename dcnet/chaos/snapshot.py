"""The state an experiment may touch, taken before and after a run (the left-over check).

Per namespace of the experiment's scope: link names, addresses, routes (all tables, key
fields), qdiscs, nftables tables, and the command lines of its processes (counted: a
process killed and started again with the same command line is as before; a fork with
its parent's command line is not counted); and the files
matching the experiment's ``watch_files`` globs (IPAM reservations, DHCP leases...).
:func:`diff` says what differs, one line each (goal: nothing).
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter

from dcnet.sysio import netns, proc


def _json(namespace: str, argv: list[str]) -> list:
    try:
        return json.loads(proc.run(argv, netns=namespace).stdout or "[]")
    except (proc.CommandError, ValueError, OSError):
        return []


def of_namespace(namespace: str) -> dict[str, list[str]]:
    """What is in one namespace (sorted lists of strings: JSON-able, comparable)."""
    if not netns.exists(namespace):
        return {"namespace": ["gone"]}
    links = {link["ifname"] for link in _json(namespace, ["ip", "-j", "link", "show"])}
    addresses = {f"{a['ifname']} {i['local']}/{i['prefixlen']}"
                 for a in _json(namespace, ["ip", "-j", "addr", "show"])
                 for i in a.get("addr_info", [])
                 if "local" in i and not i["local"].startswith("fe80:")}
    # IPv6 link-local routes come and go with the kernel's DAD, not with an experiment
    routes = {" ".join(str(r.get(k, "")) for k in ("table", "dst", "gateway", "dev"))
              for family in ("-4", "-6")
              for r in _json(namespace, ["ip", "-j", family, "route", "show", "table", "all"])
              if not str(r.get("dst", "")).startswith("fe80:")}
    qdiscs = {f"{q.get('dev')} {q.get('kind')} {q.get('handle')}"
              for q in _json(namespace, ["tc", "-j", "qdisc", "show"])}
    try:
        out = proc.run(["nft", "list", "tables"], netns=namespace).stdout
        tables = {line.strip() for line in out.splitlines() if line.startswith("table ")}
    except (proc.CommandError, OSError):
        tables = set()
    me = os.getpid()
    # a fork with its parent's command line (a server's per-connection child: busybox
    # httpd) comes and goes with the load, not with the experiment: not counted
    processes = Counter(c for p in netns.pids(namespace) if p != me
                        and (c := proc.cmdline(p)) != proc.cmdline(proc.parent(p)))
    return {"links": sorted(links), "addresses": sorted(addresses), "routes": sorted(routes),
            "qdiscs": sorted(qdiscs), "nft tables": sorted(tables),
            "processes": sorted(f"{n}x {c}" for c, n in processes.items() if c)}


def take(namespaces: tuple[str, ...], watch_files: tuple[str, ...] = ()) -> dict:
    state = {name: of_namespace(name) for name in namespaces}
    state["files"] = {"files": sorted({path for pattern in watch_files
                                       for path in glob.glob(pattern)})}
    return state


def diff(before: dict, after: dict) -> list[str]:
    """What is in ``after`` and not ``before`` (+) and the other way round (-)."""
    lines = []
    for where in sorted(set(before) | set(after)):
        old, new = before.get(where, {}), after.get(where, {})
        for part in sorted(set(old) | set(new)):
            a, b = set(old.get(part, [])), set(new.get(part, []))
            lines += [f"{where}: {part}: + {item}" for item in sorted(b - a)]
            lines += [f"{where}: {part}: - {item}" for item in sorted(a - b)]
    return lines
