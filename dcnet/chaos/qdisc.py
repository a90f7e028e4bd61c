"""Traffic-control faults: ``rate`` (tbf) and ``delay`` (netem) on one interface, stacked.

It owns the qdisc tree chaos builds on an interface and the stack file that says which
faults it is made of. Faults on the same interface combine instead of overriding each
other (Chaos Mesh #3631): the tree is rebuilt from ALL the faults active on that
interface each time one is added or reverted (:func:`combine`, pure):

- rate faults: the most restrictive (lowest rate) wins, with its burst and latency;
- delay faults: delays and jitters add up, losses combine as independent drops
  (1 - (1-a)(1-b)), the largest correlation and the first non-uniform distribution win;
- the tree: ``tbf`` at the root (handle 1:) with ``netem`` as its child (parent 1:1,
  handle 10:) when both are active, else the one that is.

The stack (``/run/dcnet/chaos/qdisc/<namespace>--<interface>.json``, a tmpfs that lives
as long as the qdiscs it describes; ``$DCNET_CHAOS_QDISC_DIR``) is updated under an flock
before the tree is rebuilt, so a new process (``elbctl chaos recover`` after a SIGKILL)
reverts one fault and rebuilds the tree of the others. A root qdisc chaos did not make
is never replaced: the fault is refused. Kernel I/O is pyroute2 (``IPRoute.tc``) through
:func:`dcnet.chaos.linkfaults.with_iproute` (a thread switched into the namespace by
:func:`dcnet.sysio.netns.run_in`); only a netem with a non-uniform delay distribution is
added with iproute2's ``tc`` (pyroute2 cannot send the distribution table). netem exists
only where the kernel has ``sch_netem`` (the kernel lab here): a delay fault is refused
before it is journaled when it does not (:func:`check_netem`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re

from dcnet.chaos.linkfaults import with_iproute
from dcnet.sysio import files, flock, netns, proc

DEFAULT_DIR = "/run/dcnet/chaos/qdisc"
ENV_DIR = "DCNET_CHAOS_QDISC_DIR"
TBF_HANDLE, NETEM_HANDLE = 0x10000, 0x100000          # 1:0 and 10:0
TBF_CHILD = 0x10001                                    # 1:1, tbf's inner qdisc
TC_H_ROOT = 0xFFFFFFFF
DEFAULT_ROOTS = frozenset({"noqueue", "pfifo_fast", "fq_codel", "mq", "noop", "fq",
                           "pfifo", "sfq"})
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?")
_UNITS = {None: 1, "bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}


class QdiscError(RuntimeError):
    """A qdisc fault could not be applied (no netem, a foreign root qdisc, ...)."""


def parse_rate(value: object) -> int:
    """Bits per second from ``1mbit``, ``500kbit``, ``2gbit`` or a number (bit/s)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a rate like 1mbit, got {value!r}")
    if isinstance(value, int | float):
        bps = int(value)
    elif isinstance(value, str) and (m := _RATE.fullmatch(value.strip().lower())):
        bps = int(float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise ValueError(f"must be a rate like 1mbit, 500kbit or bits per second, "
                         f"got {value!r}")
    if not 8000 <= bps <= 100 * 1000**3:
        raise ValueError(f"must be between 8kbit and 100gbit, got {value!r}")
    return bps


def combine(active: list[dict]) -> dict:
    """The tree of the faults active on one interface (pure): ``{"tbf": {...} | None,
    "netem": {...} | None}``."""
    rates = [f for f in active if f["kind"] == "rate"]
    delays = [f for f in active if f["kind"] == "delay"]
    tbf = None
    if rates:
        low = min(rates, key=lambda f: f["rate_bps"])
        tbf = {"rate_bps": low["rate_bps"], "burst": low["burst"],
               "latency_ms": low["latency_ms"]}
    netem = None
    if delays:
        keep = 1.0
        for f in delays:
            keep *= 1 - f["loss"] / 100
        dists = [f["distribution"] for f in delays if f["distribution"] != "uniform"]
        netem = {"delay_ms": sum(f["delay_ms"] for f in delays),
                 "jitter_ms": sum(f["jitter_ms"] for f in delays),
                 "loss": round((1 - keep) * 100, 6),
                 "correlation": max(f["correlation"] for f in delays),
                 "distribution": dists[0] if dists else "uniform"}
    return {"tbf": tbf, "netem": netem}


def stack_path(namespace: str, interface: str) -> str:
    base = os.environ.get(ENV_DIR, DEFAULT_DIR)
    return os.path.join(base, f"{namespace}--{interface}.json")


def read_stack(namespace: str, interface: str) -> list[dict]:
    try:
        with open(stack_path(namespace, interface), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return []
    except ValueError:              # torn by a crash: files.atomic_write makes it unlikely
        return []


def _write_stack(namespace: str, interface: str, stack: list[dict]) -> None:
    path = stack_path(namespace, interface)
    if stack:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        files.atomic_write(path, json.dumps(stack, sort_keys=True) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _locked(namespace: str, interface: str):
    path = stack_path(namespace, interface)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with flock.exclusive(path + ".lock", 30.0):
        yield


def check_netem() -> None:
    """Raise QdiscError unless this kernel has netem (loaded, built in, or loadable)."""
    with contextlib.suppress(OSError), open("/proc/modules") as handle:
        if any(line.split()[0] == "sch_netem" for line in handle):
            return
    release = os.uname().release
    with contextlib.suppress(OSError), open(f"/lib/modules/{release}/modules.builtin") as h:
        if any(line.strip().endswith("/sch_netem.ko") for line in h):
            return
    try:
        proc.run(["modprobe", "-q", "sch_netem"])
    except (proc.CommandError, OSError):
        raise QdiscError("this kernel has no netem qdisc (module sch_netem missing); "
                         "delay faults run where it exists, e.g. the kernel lab") from None


def _index(ipr, interface: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        raise QdiscError(f"no interface {interface!r}")
    return found[0]


def root_kind(namespace: str, interface: str) -> str:
    """The kind of the interface's root qdisc ('' when none is listed)."""
    def body(ipr) -> str:
        for msg in ipr.get_qdiscs(_index(ipr, interface)):
            if msg["parent"] == TC_H_ROOT:
                return msg.get_attr("TCA_KIND")
        return ""
    return with_iproute(namespace, body)


def tree(namespace: str, interface: str) -> list[tuple[str, str, str]]:
    """(kind, handle, parent) of every qdisc on the interface, as ``tc`` prints them."""
    def fmt(value: int) -> str:
        return "root" if value == TC_H_ROOT else f"{value >> 16:x}:{value & 0xFFFF:x}"
    def body(ipr) -> list[tuple[str, str, str]]:
        return [(m.get_attr("TCA_KIND"), fmt(m["handle"]), fmt(m["parent"]))
                for m in ipr.get_qdiscs(_index(ipr, interface))]
    return with_iproute(namespace, body)


def _delete_root(ipr, index: int) -> None:
    try:
        ipr.tc("del", index=index, parent=TC_H_ROOT)
    except Exception as exc:        # pyroute2 NetlinkError: nothing of ours there
        if getattr(exc, "code", None) not in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
            raise


def _netem_args(netem: dict) -> dict:
    args = {"delay": int(netem["delay_ms"] * 1000), "jitter": int(netem["jitter_ms"] * 1000)}
    if netem["loss"]:
        args["loss"] = netem["loss"]
        if netem["correlation"]:
            args["loss_corr"] = netem["correlation"]
    if netem["correlation"] and args["delay"] and args["jitter"]:
        args["delay_corr"] = netem["correlation"]
    return args


def _netem_tc_argv(interface: str, parent: str, netem: dict) -> list[str]:
    """iproute2's command for a netem with a distribution table (pyroute2 has none)."""
    argv = ["tc", "qdisc", "add", "dev", interface, *parent.split(), "handle", "10:",
            "netem", "delay", f"{netem['delay_ms']}ms", f"{netem['jitter_ms']}ms"]
    if netem["correlation"]:
        argv.append(f"{netem['correlation']}%")
    argv += ["distribution", netem["distribution"]]
    if netem["loss"]:
        argv += ["loss", f"{netem['loss']}%"]
    return argv


def build(namespace: str, interface: str, active: list[dict]) -> dict:
    """Replace chaos's tree on the interface by the one of ``active`` (none: the
    kernel's default qdisc comes back); the combined spec."""
    spec = combine(active)
    tbf, netem = spec["tbf"], spec["netem"]

    def body(ipr) -> None:
        index = _index(ipr, interface)
        _delete_root(ipr, index)
        if tbf:
            ipr.tc("add", "tbf", index=index, handle=TBF_HANDLE, parent=TC_H_ROOT,
                   rate=f"{tbf['rate_bps']}bit", burst=tbf["burst"],
                   latency=f"{round(tbf['latency_ms'] * 1000)}us")
        if netem:
            parent = TBF_CHILD if tbf else TC_H_ROOT
            if netem["distribution"] != "uniform":
                where = "parent 1:1" if tbf else "root"
                proc.run(_netem_tc_argv(interface, where, netem), netns=namespace)
            else:
                ipr.tc("add", "netem", index=index, handle=NETEM_HANDLE, parent=parent,
                       **_netem_args(netem))
    with_iproute(namespace, body)
    return spec


def apply(record: dict) -> dict:
    """Add the fault to its interface's stack and rebuild the tree; the combined spec."""
    namespace, interface = record["namespace"], record["interface"]
    with _locked(namespace, interface):
        stack = [f for f in read_stack(namespace, interface) if f["key"] != record["key"]]
        if not stack:
            kind = root_kind(namespace, interface)
            if kind and kind not in DEFAULT_ROOTS:
                raise QdiscError(f"{interface} in {namespace} has a root qdisc {kind!r} "
                                 "that chaos did not make: not replacing it")
        _write_stack(namespace, interface, [*stack, record])     # BEFORE the kernel
        try:
            return build(namespace, interface, [*stack, record])
        except Exception as exc:
            _write_stack(namespace, interface, stack)
            with contextlib.suppress(Exception):
                build(namespace, interface, stack)
            raise QdiscError(f"{record['kind']} on {interface} in {namespace}: {exc}") from exc


def revert(record: dict) -> str:
    """Take the fault off its interface's stack and rebuild the others (idempotent)."""
    namespace, interface = record["namespace"], record["interface"]
    what = f"{record['kind']} on {interface} in {namespace}"
    if not netns.exists(namespace):
        with contextlib.suppress(OSError):
            _write_stack(namespace, interface, [])
        return f"{what}: namespace gone, nothing to revert"
    with _locked(namespace, interface):
        stack = read_stack(namespace, interface)
        rest = [f for f in stack if f["key"] != record["key"]]
        if len(rest) == len(stack):     # never applied (refused, or died before the stack)
            return f"{what}: not in place, nothing to revert"
        _write_stack(namespace, interface, rest)
        try:
            spec = build(namespace, interface, rest)
        except QdiscError as exc:
            if "no interface" in str(exc):
                return f"{what}: interface gone, nothing to revert"
            raise
    left = ", ".join(k for k in ("tbf", "netem") if spec[k]) or "no chaos qdisc"
    return f"{what}: reverted ({left} left)"
