"""Chaos experiments as data: the schema of an experiment file and its reader.

An experiment (YAML, read through :mod:`dcnet.model.inputs`: bounded, UTF-8) names the
namespaces it may touch (``namespaces``: its scope), HTTP probes whose success ratio is
the steady-state hypothesis, a method (faults with targets and durations, and pauses)
and rollbacks (processes to start again). ``${NAME}`` in the text is replaced by a
variable given to :func:`load` (lab namespace names differ per run). Every problem is
reported with file, line and field, like a service model's. Pure except :func:`load`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from dcnet.model import inputs
from dcnet.model.errors import ModelError, Problem
from dcnet.model.fields import (
    MISSING,
    MappingReader,
    Problems,
    boolean,
    integer,
    ip_address,
    ip_network,
    list_of,
    number,
    one_of,
    text,
)
from dcnet.model.yamlsource import YAMLSourceError, load_located

FORMAT_VERSION = 1
MAX_EXPERIMENT_BYTES = 256 * 1024
EXPERIMENTS_DIR = Path(__file__).with_name("experiments")
FAULTS = frozenset({"kill", "stop", "loss", "partition", "link-down", "link-flap", "rate",
                    "delay", "dhcp-churn"})
LINK_FAULTS = frozenset({"link-down", "link-flap", "rate", "delay"})   # need "interface"
DISTRIBUTIONS = frozenset({"uniform", "normal", "pareto", "paretonormal"})
_IFNAME = text(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}", "an interface name (at most 15)")
PROBE_KINDS = frozenset({"http", "route", "cni-add", "dns", "tcp"})
QTYPES = frozenset({"A", "AAAA"})
SIGNALS = frozenset({"KILL", "TERM", "INT", "QUIT"})
_NAME = text(r"[a-z][a-z0-9-]{0,40}", "lower-case letters, digits and '-', at most 41")
_NETNS = text(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a network namespace name")
_URL = text(r"http://[^/\s:]+(:\d{1,5})?(/\S*)?", "an http:// URL (host[:port][/path])")
_HOSTPORT = text(r"[^\s:/]+:\d{1,5}", "host:port (an IPv4 address or a name)")
_ABSPATH = text(r"/\S{0,4095}", "an absolute path")
_QNAME = text(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
              r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?", "a DNS name")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ExperimentError(ModelError):
    """An experiment failed the schema; ``problems`` names file, line and field of each."""


@dataclass(frozen=True)
class Probe:
    """A steady-state probe: ``http`` (a GET of ``url``), ``route`` (``route``, a prefix,
    is in the namespace's main table), ``cni-add`` (a CNI ADD of ``conflist`` with the
    plugins in ``cni_path`` into a new pod namespace, within ``timeout``; then DEL) or
    ``dns`` (a ``qtype`` query of ``qname`` to ``server`` answers exactly the addresses
    of ``expect``: a carrier's view answers its own VIPs) or ``tcp`` (a connect to
    ``address``, host:port, kept in ``url``)."""

    name: str
    namespace: str
    url: str = ""
    min_success: float = 0.99
    timeout: float = 1.0
    concurrency: int = 2
    interval: float = 0.01
    kind: str = "http"
    route: str = ""
    conflist: str = ""
    cni_path: str = ""
    cni_args: str = ""          # CNI_ARGS; "{pod}" is replaced by the pod's name
    server: str = ""            # dns: the name server's address
    qname: str = ""
    qtype: str = "A"
    expect: tuple[str, ...] = ()    # dns: the answer's addresses, in any order


def _read_dns_probe(problems: Problems, r: MappingReader, values: dict) -> None:
    server = r.required("server", ip_address)
    values["server"] = str(server) if server not in (None, MISSING) else ""
    values["qname"] = r.required("qname", _QNAME)
    values["qtype"] = r.optional("qtype", one_of(QTYPES, "query type"), "A")
    raw = r.required("expect", lambda v: v)
    expect = []
    for i, item in enumerate(list_of((*r.path, "expect"), problems, raw, "expect")):
        try:
            address = ipaddress.ip_address(item if isinstance(item, str) else "")
        except ValueError:
            problems.add((*r.path, "expect", i), f"not an IP address: {item!r}")
            continue
        if values["qtype"] in QTYPES and address.version != (6 if values["qtype"] == "AAAA"
                                                                else 4):
            problems.add((*r.path, "expect", i), f"{address} cannot answer a "
                         f"{values['qtype']} query")
        expect.append(str(address))
    if isinstance(raw, list) and not raw:
        problems.add((*r.path, "expect"), "expect at least one address (the right answer)")
    values["expect"] = tuple(expect)


@dataclass(frozen=True)
class Step:
    """One method step: a fault (``kind`` in FAULTS) or a pause (``kind == 'pause'``)."""

    kind: str
    duration: float
    namespace: str = ""
    process: str = ""           # regex searched in the command lines of the namespace
    pidfile: str = ""
    signal: str = "KILL"
    percent: int = 100
    peer: str = ""              # loss/partition: only traffic to/from this prefix
    hold: bool = False          # stays after its duration, reverted when the method ends
    interface: str = ""         # link-down/link-flap/rate/delay
    period: float = 1.0         # link-flap: down for half of it, then up
    count: int = 0              # link-flap: flaps (0: until reverted)
    rate_bps: int = 0           # rate (tbf)
    burst: int = 32768          # rate: bytes
    latency_ms: float = 50.0    # rate: the most a packet waits in tbf
    delay_ms: float = 0.0       # delay (netem)
    jitter_ms: float = 0.0
    distribution: str = "uniform"
    loss: float = 0.0           # delay: netem loss, percent
    correlation: float = 0.0    # delay: percent, for delay and loss
    leasefile: str = ""         # dhcp-churn: the server's lease file (dnsmasq format)
    server: str = ""            # dhcp-churn: the server's address (its identifier)
    clients: str = "."          # dhcp-churn: regex over MAC, host name and address


@dataclass(frozen=True)
class Rollback:
    namespace: str
    argv: tuple[str, ...]
    ready_tcp: str = ""         # "address:port" accepting connections = started
    ready_command: tuple[str, ...] = ()     # run in the namespace until it exits 0
    log: str = ""               # append its output here (default: discarded)
    wait_gone: str = ""         # first wait until no process in the namespace matches
    timeout: float = 10.0


@dataclass(frozen=True)
class Experiment:
    name: str
    source: str
    namespaces: tuple[str, ...]
    probes: tuple[Probe, ...]
    method: tuple[Step, ...]
    rollbacks: tuple[Rollback, ...] = ()
    steady_seconds: float = 2.0
    description: str = ""
    watch_files: tuple[str, ...] = ()    # files matching these globs: as before the run
    settle_seconds: float = 0.0     # how long the left-over check waits for a clean state


def builtin(name: str) -> str:
    """The path of an experiment shipped with dcnet."""
    return str(EXPERIMENTS_DIR / f"{name}.yaml")


def load(path: str, variables: dict[str, str] | None = None) -> Experiment:
    try:
        content = inputs.read_text(path, MAX_EXPERIMENT_BYTES)
    except inputs.InputError as exc:
        what = "cannot read" if exc.unreadable else "cannot use"
        raise ExperimentError([Problem(path, exc.line, "", f"{what}: {exc}")]) from None
    return loads(content, path, variables)


def loads(content: str, source: str = "<experiment>",
          variables: dict[str, str] | None = None) -> Experiment:
    content = _substitute(content, source, variables or {})
    try:
        located = load_located(content, source)
    except YAMLSourceError as exc:
        raise ExperimentError([Problem(source, exc.line, "", exc.message)]) from None
    if located.data is None:
        raise ExperimentError([Problem(source, 1, "", "the experiment is empty")])
    problems = Problems(located)
    experiment = _read(problems, located.data, source)
    try:
        problems.raise_if_any()
    except ModelError as exc:
        raise ExperimentError(exc.problems) from None
    return experiment


def _substitute(content: str, source: str, variables: dict[str, str]) -> str:
    missing = []
    for match in _VAR.finditer(content):
        if match.group(1) not in variables:
            line = content.count("\n", 0, match.start()) + 1
            missing.append(Problem(source, line, "", f"undefined variable ${{{match.group(1)}}}"
                                   " (give it with --var NAME=VALUE)"))
    if missing:
        raise ExperimentError(missing)
    return _VAR.sub(lambda m: variables[m.group(1)], content)


def _read(problems: Problems, data: object, source: str) -> Experiment | None:
    top = MappingReader(problems, (), data, "an experiment")
    top.required("chaos", integer(FORMAT_VERSION, FORMAT_VERSION))
    name = top.required("name", _NAME)
    description = top.optional("description", text(r"(?s).*", "text"), "")
    raw_ns = top.required("namespaces", lambda v: v)
    raw_probes = top.required("probes", lambda v: v)
    raw_method = top.required("method", lambda v: v)
    raw_rollbacks = top.optional("rollbacks", lambda v: v, [])
    steady = top.optional("steady_seconds", number(0.2, 600), 2.0)
    raw_dirs = top.optional("watch_files", lambda v: v, [])
    settle = top.optional("settle_seconds", number(0.0, 600), 0.0)
    top.finish()
    watch_files = []
    for i, item in enumerate(list_of(("watch_files",), problems, raw_dirs, "watch_files")):
        try:
            watch_files.append(_ABSPATH(item))
        except ValueError as exc:
            problems.add(("watch_files", i), str(exc))
    namespaces = []
    for i, item in enumerate(list_of(("namespaces",), problems, raw_ns, "namespaces")):
        try:
            namespaces.append(_NETNS(item))
        except ValueError as exc:
            problems.add(("namespaces", i), str(exc))
    scope = frozenset(namespaces)

    def in_scope(reader: MappingReader, key: str) -> str:
        value = reader.required(key, _NETNS)
        if isinstance(value, str) and value not in scope:
            problems.add((*reader.path, key), f"namespace {value!r} is not in the "
                         "experiment's namespaces (its scope)")
        return value

    probes = []
    for i, item in enumerate(list_of(("probes",), problems, raw_probes, "probes")):
        r = MappingReader(problems, ("probes", i), item, "a probe")
        values = {"name": r.required("name", _NAME), "namespace": in_scope(r, "namespace"),
                  "kind": r.optional("kind", one_of(PROBE_KINDS, "probe kind"), "http"),
                  "min_success": r.optional("min_success", number(0.0, 1.0), 0.99),
                  "timeout": r.optional("timeout", number(0.05, 60), 1.0),
                  "concurrency": r.optional("concurrency", integer(1, 32), 2),
                  "interval": r.optional("interval", number(0.0, 10), 0.01)}
        if values["kind"] == "http":
            values["url"] = r.required("url", _URL)
        elif values["kind"] == "route":
            route = r.required("route", ip_network)
            values["route"] = str(route) if route not in (None, MISSING) else ""
        elif values["kind"] == "cni-add":
            values["conflist"] = r.required("conflist", _ABSPATH)
            values["cni_path"] = r.required("cni_path", text(r"/[^\s]*", "directories "
                                                             "separated by ':'"))
            values["cni_args"] = r.optional("cni_args", text(r"[^\s]{0,1000}", "K=V;K=V"), "")
        elif values["kind"] == "dns":
            _read_dns_probe(problems, r, values)
        elif values["kind"] == "tcp":               # a connect to "host:port", kept in url
            values["url"] = r.required("address", _HOSTPORT)
        if r.finish() and values["kind"] is not MISSING:
            probes.append(Probe(**values))
    if isinstance(raw_probes, list) and not raw_probes:
        problems.add(("probes",), "an experiment needs at least one probe (its steady state)")
    method = []
    for i, item in enumerate(list_of(("method",), problems, raw_method, "method")):
        step = _read_step(problems, ("method", i), item, in_scope)
        if step is not None:
            method.append(step)
    if isinstance(raw_method, list) and not raw_method:
        problems.add(("method",), "the method needs at least one step")
    rollbacks = []
    for i, item in enumerate(list_of(("rollbacks",), problems, raw_rollbacks, "rollbacks")):
        r = MappingReader(problems, ("rollbacks", i), item, "a rollback")
        start = r.required("start", lambda v: v)
        r.finish()
        s = MappingReader(problems, ("rollbacks", i, "start"), start, "start")
        namespace = in_scope(s, "namespace")
        raw_argv = s.required("argv", lambda v: v)
        ready = s.optional("ready_tcp", text(r"[0-9a-fA-F.:]+:\d{1,5}", "address:port"), "")
        timeout = s.optional("timeout", number(0.1, 600), 10.0)
        log = s.optional("log", _ABSPATH, "")
        wait_gone = s.optional("wait_gone", text(r".{1,200}", "a regex"), "")
        raw_ready = s.optional("ready_command", lambda v: v, [])
        ready_command = list_of(("rollbacks", i, "start", "ready_command"), problems,
                                raw_ready, "ready_command")
        if not all(isinstance(a, str) for a in ready_command):
            problems.add(("rollbacks", i, "start", "ready_command"), "a list of strings")
        argv = list_of(("rollbacks", i, "start", "argv"), problems, raw_argv, "argv")
        if raw_argv is not MISSING and (not argv or not all(isinstance(a, str) for a in argv)):
            problems.add(("rollbacks", i, "start", "argv"), "argv must be a non-empty list "
                         "of strings")
        elif s.finish() and raw_argv is not MISSING:
            rollbacks.append(Rollback(namespace, tuple(argv), ready_tcp=ready,
                                      timeout=timeout, ready_command=tuple(ready_command),
                                      log=log, wait_gone=wait_gone))
    if problems.items:
        return None
    return Experiment(name=name, source=source, namespaces=tuple(namespaces),
                      probes=tuple(probes), method=tuple(method), rollbacks=tuple(rollbacks),
                      steady_seconds=steady, description=description.strip(),
                      watch_files=tuple(watch_files), settle_seconds=settle)


def _read_step(problems: Problems, path: tuple, data: object, in_scope) -> Step | None:
    r = MappingReader(problems, path, data, "a method step")
    if isinstance(data, dict) and "pause" in data:
        pause = r.required("pause", number(0.0, 3600))
        return Step("pause", pause) if r.finish() else None
    kind = r.required("fault", one_of(FAULTS, "fault"))
    namespace = in_scope(r, "namespace")
    duration = r.required("duration", number(0.0, 3600))
    values = {"hold": r.optional("hold", boolean, False)}
    if kind in ("kill", "stop"):
        values["process"] = r.optional("process", text(r".{1,200}", "a regex"), "")
        values["pidfile"] = r.optional("pidfile", text(r"/\S+", "an absolute path"), "")
        if kind == "kill":
            values["signal"] = r.optional("signal", one_of(SIGNALS, "signal"), "KILL")
        if isinstance(data, dict) and bool(data.get("process")) == bool(data.get("pidfile")):
            problems.add(path, f"a {kind} fault needs exactly one of 'process' or 'pidfile'")
            r.failed = True
        elif values["process"]:
            try:
                re.compile(values["process"])
            except re.error as exc:
                problems.add((*path, "process"), f"not a regular expression: {exc}")
                r.failed = True
    elif kind in ("loss", "partition"):
        if kind == "loss":
            values["percent"] = r.required("percent", integer(1, 100))
        peer = r.optional("peer", ip_network)
        values["peer"] = str(peer) if peer not in (None, MISSING) else ""
    elif kind in LINK_FAULTS:
        values.update(_read_link_fault(r, kind, problems, path))
    elif kind == "dhcp-churn":
        values.update(_read_dhcp_churn(r, problems, path))
    if kind is MISSING:         # its other fields cannot be judged
        return None
    if not r.finish():
        return None
    return Step(kind, duration, namespace, **values)


def _read_link_fault(r: MappingReader, kind: str, problems: Problems, path: tuple) -> dict:
    """The fields of link-down/link-flap/rate/delay (the fault part of the schema)."""
    from dcnet.chaos.qdisc import parse_rate

    values = {"interface": r.required("interface", _IFNAME)}
    if kind == "link-flap":
        values["period"] = r.optional("period", number(0.05, 3600), 1.0)
        values["count"] = r.optional("count", integer(0, 100000), 0)
    elif kind == "rate":
        values["rate_bps"] = r.required("rate", parse_rate)
        values["burst"] = r.optional("burst", integer(1600, 64 * 1024 * 1024), 32768)
        values["latency_ms"] = r.optional("latency", number(1, 10000), 50.0)
    elif kind == "delay":
        values["delay_ms"] = r.required("delay", number(0, 60000))
        values["jitter_ms"] = r.optional("jitter", number(0, 60000), 0.0)
        values["distribution"] = r.optional("distribution",
                                            one_of(DISTRIBUTIONS, "distribution"), "uniform")
        values["loss"] = r.optional("loss", number(0, 100), 0.0)
        values["correlation"] = r.optional("correlation", number(0, 100), 0.0)
        if values["distribution"] not in ("uniform", MISSING) and not values["jitter_ms"]:
            problems.add((*path, "distribution"), "a delay distribution needs a jitter > 0")
            r.failed = True
        elif (isinstance(values["jitter_ms"], float) and isinstance(values["delay_ms"], float)
              and values["jitter_ms"] > values["delay_ms"]):
            problems.add((*path, "jitter"), "jitter must not exceed the delay")
            r.failed = True
    return values


def _read_dhcp_churn(r: MappingReader, problems: Problems, path: tuple) -> dict:
    """The fields of dhcp-churn (releases sent to the server on the clients' behalf)."""
    values = {"interface": r.required("interface", _IFNAME),
              "leasefile": r.required("leasefile", text(r"/\S{0,4095}", "an absolute path")),
              "server": r.required("server", ip_address),
              "clients": r.optional("clients", text(r".{1,200}", "a regex"), "."),
              "period": r.optional("period", number(0, 3600), 0.0)}
    if isinstance(values["server"], ipaddress.IPv6Address):
        problems.add((*path, "server"), "DHCPv4 only: an IPv4 address")
        r.failed = True
    values["server"] = str(values["server"])
    try:
        re.compile(values["clients"])
    except (re.error, TypeError) as exc:
        problems.add((*path, "clients"), f"not a regular expression: {exc}")
        r.failed = True
    return values
