"""Faults: apply one to a process or a namespace, and revert it from its journal record.

Kinds: ``kill`` (a signal to the matching processes; nothing to revert, rollbacks start
them again), ``stop`` (SIGSTOP; reverted with SIGCONT to the same processes, checked by
start time), ``loss`` and ``partition`` (``numgen random`` drop rules, input and output,
optionally only to/from a peer prefix, in an nftables table of the experiment's own in
the named namespace; reverted by deleting that table), ``link-down``/``link-flap``
(:mod:`dcnet.chaos.linkfaults`), ``rate``/``delay`` (tbf/netem, stacked per interface:
:mod:`dcnet.chaos.qdisc`), ``dhcp-churn`` (releases on the clients' behalf:
:mod:`dcnet.chaos.dhcpchurn`). Processes are only looked for in
the namespace the step names (scope). :func:`revert` is idempotent: reverting twice, or
a fault that never got applied (the runner died between journal and apply), is fine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time

from dcnet.chaos import dhcpchurn, linkfaults, qdisc
from dcnet.chaos.experiment import Step
from dcnet.sysio import netns, proc

TABLE_PREFIX = "dcnet_chaos_"
LINK_KINDS = frozenset({"link-down", "link-flap"})
QDISC_KINDS = frozenset({"rate", "delay"})


class FaultError(RuntimeError):
    """A fault could not be applied (no matching process, nft refused, ...)."""


def find_pids(step: Step) -> list[int]:
    """The processes a kill/stop step targets, all inside its namespace."""
    inside = set(netns.pids(step.namespace)) - {os.getpid()}
    if step.pidfile:
        try:
            with open(step.pidfile) as handle:
                pid = int(handle.read().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise FaultError(f"pid file {step.pidfile}: {exc}") from None
        if pid not in inside:
            raise FaultError(f"pid {pid} of {step.pidfile} is not in namespace "
                             f"{step.namespace}")
        return [pid]
    regex = re.compile(step.process)
    found = sorted(p for p in inside if regex.search(proc.cmdline(p)))
    if not found:
        raise FaultError(f"no process matching {step.process!r} in namespace {step.namespace}")
    return found


def table_name(experiment: str, index: int) -> str:
    return f"{TABLE_PREFIX}{re.sub(r'[^a-z0-9]', '_', experiment)}_{index}"


def prepare(step: Step, experiment: str, index: int) -> dict:
    """The journal record of ``step``: everything needed to apply and to revert it."""
    record = {"kind": step.kind, "namespace": step.namespace, "experiment": experiment}
    if step.kind in LINK_KINDS | QDISC_KINDS:
        return _prepare_link(step, record, f"{experiment}/{index}/{os.getpid()}-"
                                           f"{time.time_ns()}")
    if step.kind == "dhcp-churn":
        record.update(interface=step.interface, leasefile=step.leasefile, server=step.server,
                      clients=step.clients, period=step.period,
                      key=f"{experiment}/{index}/{os.getpid()}-{time.time_ns()}")
        try:
            dhcpchurn.leases(step.leasefile)
        except dhcpchurn.ChurnError as exc:
            raise FaultError(f"fault dhcp-churn in {step.namespace}: {exc}") from None
        return record
    if step.kind in ("kill", "stop"):
        record["pids"] = [[p, proc.start_time(p)] for p in find_pids(step)]
        record["signal"] = step.signal if step.kind == "kill" else "STOP"
    else:
        record["table"] = table_name(experiment, index)
        record["percent"] = step.percent if step.kind == "loss" else 100
        record["peer"] = step.peer
    return record


def _prepare_link(step: Step, record: dict, key: str) -> dict:
    record.update(interface=step.interface, key=key)
    what = f"fault {step.kind} on {step.interface} in {step.namespace}"
    try:
        if step.kind in LINK_KINDS:     # a link down before the fault stays down after it
            record["was_up"] = linkfaults.is_up(step.namespace, step.interface)
        linkfaults.check(step.namespace, step.interface)
        if step.kind == "delay":
            qdisc.check_netem()
    except (linkfaults.LinkError, qdisc.QdiscError) as exc:
        raise FaultError(f"{what}: {exc}") from None
    if step.kind == "link-flap":
        record.update(period=step.period, count=step.count)
    elif step.kind == "rate":
        record.update(rate_bps=step.rate_bps, burst=step.burst, latency_ms=step.latency_ms)
    elif step.kind == "delay":
        record.update(delay_ms=step.delay_ms, jitter_ms=step.jitter_ms, loss=step.loss,
                      correlation=step.correlation, distribution=step.distribution)
    return record


def nft_ruleset(record: dict) -> str:
    """The table of a loss/partition fault (pure)."""
    match = ""
    if record["peer"]:
        family = "ip6" if ipaddress.ip_network(record["peer"]).version == 6 else "ip"
        match = f"{family} {{dir}}addr {record['peer']} "
    drop = ("drop" if record["percent"] >= 100 else
            f"numgen random mod 100 < {record['percent']} drop")
    table = record["table"]
    return (f"table inet {table} {{\n"
            f"  chain input {{ type filter hook input priority -300; policy accept;\n"
            f"    {match.format(dir='s')}{drop}\n  }}\n"
            f"  chain output {{ type filter hook output priority -300; policy accept;\n"
            f"    {match.format(dir='d')}{drop}\n  }}\n"
            f"  chain forward {{ type filter hook forward priority -300; policy accept;\n"
            f"    {match.format(dir='d')}{drop}\n  }}\n}}\n")


def apply(record: dict) -> None:
    kind = record["kind"]
    try:
        if kind in LINK_KINDS:
            return linkfaults.apply(record)
        if kind in QDISC_KINDS:
            qdisc.apply(record)
            return None
        if kind == "dhcp-churn":
            return dhcpchurn.apply(record)
    except (linkfaults.LinkError, qdisc.QdiscError, dhcpchurn.ChurnError, OSError) as exc:
        raise FaultError(f"fault {kind}: {exc}") from None
    if kind in ("kill", "stop"):
        signum = getattr(signal, f"SIG{record['signal']}")
        for pid, started in record["pids"]:
            if proc.is_same_process(pid, started):
                proc.kill(pid, signum)
        return
    try:
        proc.run(["nft", "-f", "-"], netns=record["namespace"], input=nft_ruleset(record))
    except proc.CommandError as exc:
        raise FaultError(f"nft in {record['namespace']}: {exc}") from None


def revert(record: dict) -> str:
    """Undo a journaled fault (idempotent); a line saying what was done."""
    kind, namespace = record["kind"], record["namespace"]
    if kind == "kill":
        return f"kill in {namespace}: nothing to revert (rollbacks start processes again)"
    if kind == "stop":
        resumed = [pid for pid, started in record["pids"]
                   if proc.is_same_process(pid, started) and proc.kill(pid, signal.SIGCONT)]
        return f"stop in {namespace}: SIGCONT to {resumed or 'no process left'}"
    if kind in LINK_KINDS:
        return linkfaults.revert(record)
    if kind in QDISC_KINDS:
        return qdisc.revert(record)
    if kind == "dhcp-churn":
        return dhcpchurn.revert(record)
    if not netns.exists(namespace):
        return f"{kind} in {namespace}: namespace gone, nothing to revert"
    if record["table"] not in tables(namespace):
        return f"{kind} in {namespace}: table {record['table']} not there"
    proc.run(["nft", "delete", "table", "inet", record["table"]], netns=namespace)
    return f"{kind} in {namespace}: deleted nft table {record['table']}"


def tables(namespace: str) -> list[str]:
    """The chaos tables in a namespace (leftover check)."""
    out = proc.run(["nft", "list", "tables"], netns=namespace).stdout
    return [line.split()[-1] for line in out.splitlines()
            if line.startswith("table ") and line.split()[-1].startswith(TABLE_PREFIX)]
