"""``elbctl render keepalived``: keepalived.conf from the model, through jinja2 templates.

One ``vrrp_instance`` per director group (:meth:`LVSSettings.groups`) and address
family (``NAME`` for IPv4, ``NAME-v6`` for IPv6, VRRP version 3) holding its carriers'
VIPs (each on its carrier's uplink, so gratuitous ARP and unsolicited neighbour
advertisements leave by the link the carrier's router listens on) with
``virtual_routes`` (the carrier table's default route, with elbctl's route protocol;
``::/0`` via ``gateway6`` for IPv6) and ``virtual_rules`` (``from VIP lookup <table>``);
one ``virtual_server`` per VIP and port with the model's scheduler, forwarding,
persistence, weights (real servers of the VIP's family unless TUN) and health check
(``inhibit_on_failure``: a failing server goes to weight 0
instead of being deleted, so its connections drain).

Templates are ``keepalived.conf.j2``, ``vrrp_instance.j2`` and ``virtual_server.j2``
(package ``dcnet/lvs/templates``); an operator directory given by ``--templates`` or
``$DCNET_LVS_TEMPLATES`` overrides any of them by name. :func:`check_config` runs
``keepalived -t`` on the text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources

from dcnet import templating
from dcnet.sysio.files import atomic_write

KIND = {"nat": "NAT", "dr": "DR", "tun": "TUN"}


class KeepalivedError(RuntimeError):
    pass


def _num(value: float) -> str:
    return f"{value:g}"


def context(model, director: str | None = None) -> dict:
    """The template variables (pure)."""
    lvs = model.lvs
    directors = {d.name: d.priority for d in lvs.directors}
    if director is not None and director not in directors:
        raise KeepalivedError(f"unknown director {director!r} (lvs.directors: "
                              f"{', '.join(sorted(directors)) or 'none'})")
    if director is None and directors:
        raise KeepalivedError("the model lists lvs.directors: choose one with --director")
    priority = directors.get(director, 100) if director else 100
    state = "MASTER" if not directors or priority == max(directors.values()) else "BACKUP"
    carriers = {c.name: c for c in model.carriers}
    vips_of: dict[str, list[str]] = {}
    for service in model.services:
        for name, vip in service.vips:
            if str(vip) not in vips_of.setdefault(name, []):
                vips_of[name].append(str(vip))
    groups = []
    for group in lvs.groups(model.carriers):
        for family in (4, 6):
            entry = _instance(group, family, state, priority, carriers, vips_of, lvs)
            if entry["vips"]:
                groups.append(entry)
    return {"source": model.source, "router_id": director or "elbctl", "groups": groups,
            "virtual_servers": virtual_servers(model)}


def _instance(group, family: int, state: str, priority: int, carriers: dict,
              vips_of: dict[str, list[str]], lvs) -> dict:
    """The vrrp_instance of one director group for one address family: keepalived holds
    one family per instance (the VIPs decide it; IPv6 ones run VRRP version 3), so a
    dual-stack group has ``NAME`` (IPv4) and ``NAME-v6`` (same virtual router id: the
    families are separate VRRP protocols)."""
    entry = {"name": group.name if family == 4 else f"{group.name}-v6", "family": family,
             "state": state, "interface": group.interface, "vrid": group.virtual_router_id,
             "priority": priority, "advert_int": group.advert_int, "vips": [], "routes": [],
             "rules": []}
    bits = 32 if family == 4 else 128
    for name in group.carriers:
        carrier = carriers[name]
        gateway = carrier.gateway_of(family)
        if gateway is not None:
            entry["routes"].append({"dst": "default" if family == 4 else "::/0",
                                    "gateway": str(gateway), "dev": carrier.uplink,
                                    "table": carrier.table, "protocol": lvs.route_protocol})
        for vip in vips_of.get(name, []):
            if (":" in vip) != (family == 6):
                continue
            entry["vips"].append({"address": vip, "bits": bits, "dev": carrier.uplink})
            entry["rules"].append({"src": vip, "bits": bits, "table": carrier.table,
                                   "priority": lvs.rule_priority_min})
    return entry


def virtual_servers(model) -> list[dict]:
    out = []
    for service in model.services:
        hc = service.health_check
        for _name, vip in service.vips:
            for port in service.ports:
                check = {"type": hc.type.value, "path": hc.path, "status": hc.expect_status,
                         "port": hc.port, "timeout": _num(hc.timeout),
                         "interval": _num(hc.interval), "retry": hc.fall}
                out.append({
                    "vip": str(vip), "port": port.port, "protocol": port.protocol.value.upper(),
                    "scheduler": port.scheduler, "kind": KIND[port.forward.value],
                    "persistence": port.persistence, "delay_loop": _num(hc.interval),
                    "check": check,
                    # NAT/DR pair a VIP with real servers of its family (TUN mixes)
                    "real_servers": [{"address": str(r.address),
                                      "port": service.server_port(r, port),
                                      "weight": r.weight} for r in service.real_servers
                                     if port.forward.value == "tun"
                                     or r.address.version == vip.version],
                })
    return out


def environment(templates: str | None = None):
    import jinja2

    loaders: list = []
    if templates:
        if not os.path.isdir(templates):
            raise KeepalivedError(f"template directory {templates} does not exist")
        loaders.append(jinja2.FileSystemLoader(templates))
    loaders.append(jinja2.FileSystemLoader(str(resources.files("dcnet.lvs") / "templates")))
    # sandboxed, deadline, output limit, errors naming template file and line
    return templating.environment(jinja2.ChoiceLoader(loaders))


def render(model, director: str | None = None, templates: str | None = None) -> str:
    try:
        return templating.render(environment(templates), "keepalived.conf.j2",
                                 **context(model, director))
    except templating.TemplateFailure as exc:
        raise KeepalivedError(f"template error: {exc}") from None


def interfaces(model) -> list[str]:
    """Every interface a rendered configuration names (VRRP interfaces and uplinks)."""
    names = {g.interface for g in model.lvs.groups(model.carriers)}
    names |= {c.uplink for c in model.carriers}
    return sorted(n for n in names if n)


def check_config(text: str, needed: list[str] = (), keepalived: str | None = None) -> None:
    """``keepalived -t`` on ``text``; KeepalivedError with its output when it refuses.

    keepalived -t refuses interfaces that do not exist, so when some of ``needed`` are
    missing here the check runs in a scratch network namespace (``unshare --net``)
    holding stand-ins (bridges) of every needed interface.
    """
    binary = keepalived or shutil.which("keepalived") or "/usr/sbin/keepalived"
    missing = [n for n in needed if not os.path.exists(f"/sys/class/net/{n}")]
    with tempfile.TemporaryDirectory(prefix="elbctl-keepalived-") as tmp:
        path = os.path.join(tmp, "keepalived.conf")
        with open(path, "w") as fh:
            fh.write(text)
        argv = [binary, "-t", "-f", path]
        done = _run_in_scratch(argv, list(needed)) if missing else _run(argv)
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise KeepalivedError(f"keepalived -t refused the configuration (exit "
                              f"{done.returncode}):\n{output}")


def _run(argv: list[str], netns: str | None = None):
    from dcnet.sysio import proc

    try:
        return proc.run(argv, netns=netns, check=False, timeout=60)
    except proc.CommandError as exc:
        raise KeepalivedError(f"cannot run {argv[0]} -t: {exc}") from exc


def _run_in_scratch(argv: list[str], ifnames: list[str]):
    """Run ``argv`` in a fresh, unnamed network namespace (``unshare --net``) holding a
    bridge named after each interface; it vanishes with the process."""
    import shlex

    if os.geteuid() != 0:
        raise KeepalivedError(f"keepalived -t needs the interfaces {', '.join(ifnames)}; "
                              "run as root (checked in a scratch namespace) or --no-check")
    setup = "".join(f"ip link add {shlex.quote(n)} type bridge && "
                    f"ip link set {shlex.quote(n)} up && " for n in ifnames)
    return _run(["unshare", "--net", "sh", "-c", setup + "exec " + shlex.join(argv)])


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` (``dcnet.sysio.files.atomic_write``, fsynced)."""
    atomic_write(path, text, fsync=True)
