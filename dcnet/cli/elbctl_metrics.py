"""``elbctl exporter`` and ``elbctl metrics sd|rules``: Prometheus metrics of a director.

``elbctl exporter`` serves ``/metrics`` for a director without etcd: per target
(``--target``, repeatable: haproxy, lvs, ...) the apply status that every run leaves
(:mod:`dcnet.metrics.status`), drift (the plan of the last applied model not empty,
checked every ``--drift-interval`` seconds off the scrape path, under the target's lock
with a short wait), HAProxy's backends and servers (runtime API ``show stat``) and IPVS
connections and traffic counters per namespace (``--ipvs-netns``, ``/proc/net/ip_vs``,
``ip_vs_stats`` and a generic-netlink dump; ``elbctl agent`` of the lvs target: its
director's namespace).
``elbctl agent --metrics-address`` serves the same collector (:func:`elb_registry`).
The model labels the series (``-f``; else the last model the target applied).

``elbctl metrics sd`` prints a Prometheus file-SD document (:mod:`dcnet.metrics.sd`);
``elbctl metrics rules`` prints the shipped recording and alert rules.
"""

from __future__ import annotations

import pickle
import signal
import sys
import threading
import zlib
from collections.abc import Callable
from functools import partial

import click

from dcnet.cli.common import (
    all_target_options,
    exit_invalid_model,
    load_model_or_exit,
    with_target_options,
)
from dcnet.metrics import isolated, sd
from dcnet.metrics.cardinality import DEFAULT_MAX_SERVER_SERIES, MODES, Bound
from dcnet.metrics.status import status_path
from dcnet.model import ModelError
from dcnet.model.loader import read_model_text
from dcnet.target import registry
from dcnet.target.watch import Watch, check_in_child

STATS_PATH = "/proc/thread-self/net/ip_vs_stats"
KEEP_IPVS_TEXT = 1 << 20    # below: per-server rows from the summed read; above: read again


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(exporter)
    cli.add_command(metrics)


def options_for(target: str, params: dict) -> dict:
    """The flags given on the command line that belong to ``target`` (others ignored)."""
    mine = {opt.flag: opt.name for opt in registry.target_options(target)}
    out = {}
    for flag in all_target_options():
        value = params.get("t_" + flag.replace("-", "_"))
        if flag in mine and value not in (None, False):
            out[mine[flag]] = value
    return out


class IsolatedWatch(Watch):
    """The :class:`Watch` of ``elbctl exporter``: the model is loaded, and drift planned
    with it, in a short-lived child process each time (:func:`check_in_child`); this
    process keeps only the :class:`~dcnet.metrics.elb.ServiceIndex` that labels the
    series, and the given model's text (compressed) until the first child has parsed it,
    then that model pickled in pieces (compressed: 0.3 MiB at 10,000 x 10): later
    children hand those pieces to each target's drift check, which reads them one at a
    time (at 10,000 x 10 the first child peaks at 39-40 MiB, each drift check's at
    38-41 MiB against a live nft table or HAProxy; docs/metrics.md).
    A 10,000 x 10 model left 265 MiB resident in the process that loaded it."""

    def __init__(self, targets: dict[str, dict], model_path: str | None = None,
                 interval: float = 60.0, lock_timeout: float = 5.0, vips: bool = True):
        self.model_path, self.text, self.digest, self.vips = model_path, None, None, vips
        self.pickled: tuple[bytes, ...] | None = None   # dcnet.model.pieces.pack
        if model_path is not None:
            self.text = zlib.compress(read_model_text(model_path).encode(), 6)
        super().__init__(targets, None, interval, lock_timeout)

    def refresh_model(self) -> None:
        self._run(drift=False)

    def check(self) -> None:
        try:
            self._run(drift=True)
        except Exception as exc:   # the child died (killed, out of memory): drift as it was
            click.echo(f"elbctl exporter: drift check failed: {exc!r}", err=True)

    def _run(self, drift: bool) -> None:
        digest, index, drifts, pickled = isolated.call(
            check_in_child, self.targets, self.model_path, self.text, self.lock_timeout,
            dict(self.drifts), self.digest, drift, self.vips, self.pickled)
        if pickled is not None:            # parsed once: later children unpickle it
            self.pickled, self.text = pickled, None
        if digest != self.digest:
            self.current = None if index is None else pickle.loads(index)
            self.digest = digest
        if drift:
            self.drifts = drifts
        isolated.trim()


def haproxy_source(options: dict) -> Callable[[str], str]:
    """``show stat <filter>`` over the target's admin socket, line by line as it arrives
    (:func:`dcnet.metrics.haproxy_stat.stream`)."""
    from dcnet.haproxy.paths import Paths
    from dcnet.metrics.haproxy_stat import stream

    socket_path = Paths.from_env(options.get("run_dir"), options.get("config")).admin_socket
    return lambda which: stream(socket_path, f"show stat {which}", timeout=10.0)


def nft_source(options: dict) -> Callable[[], dict]:
    """The nft target's counter objects: one netlink dump of them in its namespace
    (:class:`dcnet.nft.objects.CounterReader`; ``nft list counters`` loads every chain)."""
    from dcnet.nft.objects import CounterReader

    return CounterReader(options.get("netns")).read


def ipvs_table(text: str, stats: str):
    """Pure: an :class:`dcnet.metrics.elb.IPVSTable` from the text of ``/proc/net/ip_vs``
    and ``/proc/net/ip_vs_stats`` (fwmark services have no VIP: skipped)."""
    from dcnet.lvs import procfs
    from dcnet.metrics.elb import IPVSRow, IPVSTable, parse_ip_vs_stats

    rows = []
    for service, dests in procfs.parse(text).items():
        if service[0] == "fwmark":
            continue
        protocol = procfs.PROTOCOL_NAME.get(service[0], str(service[0]))
        for d in dests:
            server = f"[{d[1]}]:{d[2]}" if ":" in d[1] else f"{d[1]}:{d[2]}"
            rows.append(IPVSRow(service[1], service[2], protocol, server, d[7], d[8], d[4]))
    return IPVSTable(rows, parse_ip_vs_stats(stats))


def ipvs_summed_table(text: str, stats: str, sums: dict | None = None, read_text=None):
    """Pure: like :func:`ipvs_table`, the rows summed per (vip, port) by one pass over
    the text (``sums``: :func:`dcnet.lvs.procfs.sum_dests`'s, already made) and made
    only if asked (per-server series on), of ``text`` or of ``read_text()``."""
    from dcnet.lvs import procfs
    from dcnet.metrics import ipvs
    from dcnet.metrics.elb import IPVSTable, parse_ip_vs_stats

    per_vip, count = ipvs.vip_sums(procfs.sum_dests(text) if sums is None else sums)
    return IPVSTable(totals=parse_ip_vs_stats(stats), sums=per_vip, count=count,
                     read_rows=lambda: ipvs_table(read_text() if read_text else text,
                                                  "").rows)


def ipvs_source(namespaces: list[str]) -> Callable[[], dict]:
    """Per namespace name ('host': this one), the IPVS table as the kernel prints it,
    with the traffic counters of a generic-netlink dump (:mod:`dcnet.metrics.ipvs`)."""
    import socket

    from dcnet.lvs import genl, ipvs_stats, procfs
    from dcnet.metrics import ipvs
    from dcnet.sysio import netns

    def opener(path: str | None) -> Callable[[], ipvs_stats.StatsSocket]:
        return lambda: ipvs_stats.StatsSocket(None if path is None else netns.socket_in(
            path, socket.AF_NETLINK, socket.SOCK_RAW, genl.NETLINK_GENERIC))

    def read_stats() -> str:
        with open(STATS_PATH, encoding="ascii") as handle:
            return handle.read()

    def tables() -> dict:
        out = {}
        for name in namespaces:
            path = None if name == "host" else netns.path_of(name)
            with procfs.open_in(path) as handle:     # summed as read; kept if small
                sums, text = procfs.sum_read(handle, keep=KEEP_IPVS_TEXT)
            stats = read_stats() if path is None else netns.call_here_in(path, read_stats)
            out[name] = ipvs.attach(ipvs_summed_table(text or "", stats, sums, None if text
                                    else partial(procfs.read_in, path)), opener(path))
        return out

    return tables


class EtcdHealth:
    """Scrape-time etcd health of ``elbctl agent``: one ``status`` call on a client of
    its own, plus the agent's apply count and the model revision it follows."""

    def __init__(self, agent):
        self.agent = agent
        self.client = None

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("dcnet_elb_agent_etcd_up", "1 when etcd answered a status "
                               "request at this scrape")
        try:
            if self.client is None:
                self.client = self.agent._client_factory()
            self.client.status()
            up.add_metric([], 1)
        except Exception:          # unreachable, TLS or auth failure: down
            self.client = None
            up.add_metric([], 0)
        yield up
        converges = CounterMetricFamily("dcnet_elb_agent_converges", "Applies the agent "
                                        "started (every target run is in dcnet_elb_applies)")
        converges.add_metric([], self.agent.applies)
        yield converges
        revision = GaugeMetricFamily("dcnet_elb_agent_model_revision", "Model revision "
                                     "the agent follows (-1: none yet)")
        current = self.agent.state.current
        revision.add_metric([], -1 if current is None else current)
        yield revision
        drift = CounterMetricFamily("dcnet_elb_agent_drift_events", "Drifts the agent "
                                    "recorded (its target changed outside dcnet), by "
                                    "action: repaired, or alerted (left as is)",
                                    labels=["action"])
        for action, count in sorted(self.agent.drift.events.items()):
            drift.add_metric([action], count)
        yield drift
        authors = CounterMetricFamily("dcnet_elb_agent_drift_authors", "Drifts the agent "
                                      "recorded, by the comm of the first process the "
                                      "kernel named as their author (unknown: none; at "
                                      "most 16 names, then other)", labels=["by"])
        for by, count in sorted(self.agent.drift.authors.items()):
            authors.add_metric([by], count)
        yield authors


class AgentWatch(Watch):
    """``elbctl agent``'s :class:`Watch`: the model it applies labels the series, and
    ``dcnet_elb_drift`` is what the agent's own passes found (1 while a drift is left as
    is under ``agent.drift: alert``), not a second planner taking the target's lock."""

    def __init__(self, agent, target: str, options: dict, source: Callable[[], object]):
        self.agent = agent
        super().__init__({target: options}, None, 2.0, source=source)

    def check(self, refresh: bool = True) -> None:
        self.refresh_model()
        self.drifts = {name: None if self.current is None else self.agent.drift.active
                       for name in self.targets}


def serve_agent_metrics(address: str | None, agent, target: str, options: dict,
                        max_server_series: int = DEFAULT_MAX_SERVER_SERIES):
    """``elbctl agent --metrics-address``: the ELB collector of its target (labelled and
    drift-checked with the model it applies) plus etcd health; None without address."""
    if not address:
        return None

    def applied():
        parsed = agent._parsed
        return parsed[1] if parsed is not None else None

    from dcnet.metrics.server import serve

    watch = AgentWatch(agent, target, options, source=applied)
    reg = elb_registry({target: options}, watch, Bound(max_server_series),
                       [options.get("netns") or "host"] if target == "lvs" else None)
    reg.register(EtcdHealth(agent))
    try:
        return serve(reg, address)
    except (OSError, ValueError) as exc:
        click.echo(f"elbctl agent: cannot serve metrics on {address}: {exc}", err=True)
        sys.exit(3)


def elb_registry(targets: dict[str, dict], watch: Watch, bound: Bound,
                 ipvs_netns: list[str] | None = None):
    """An exposition holding the ELB collector for ``targets`` ({name: options})."""
    from dcnet.metrics.elb import ELBCollector
    from dcnet.metrics.exposition import Exposition

    status_paths = {}
    for name, options in targets.items():
        instance = registry.create(name, **options)
        try:
            lock = instance.lock_path()
        finally:
            instance.close()
        if lock is not None:
            status_paths[name] = status_path(lock)
    collector = ELBCollector(
        model=lambda: watch.current,
        haproxy_stat=haproxy_source(targets["haproxy"]) if "haproxy" in targets else None,
        ipvs_tables=ipvs_source(ipvs_netns) if ipvs_netns else None,
        status_paths=status_paths, drift=lambda: watch.drifts, bound=bound,
        nft_counters=nft_source(targets["nft"]) if "nft" in targets else None)
    out = Exposition()
    out.register(collector)
    return out


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


metrics_address_option = click.option(
    "--metrics-address", default=":9108", show_default=True, envvar="DCNET_METRICS_ADDRESS",
    help="Where /metrics listens: HOST:PORT, [V6]:PORT or :PORT.")
bound_options = [
    click.option("--max-server-series", type=click.IntRange(0), show_default=True,
                 default=DEFAULT_MAX_SERVER_SERIES,
                 help="Per-real-server series only up to this many server rows per source."),
    click.option("--cardinality", type=click.Choice(MODES), default="auto", show_default=True,
                 help="auto: per server up to the bound; server/service: always/never."),
]


@click.command()
@click.option("-f", "--file", "model_path", type=click.Path(dir_okay=False),
              help="The service model labelling the series (default: the last model "
                   "the target applied).")
@click.option("--target", "targets", multiple=True, default=("haproxy",), show_default=True,
              help="A target of this director (repeatable).")
@metrics_address_option
@click.option("--netns", "listen_netns", help="Listen inside this network namespace.")
@click.option("--ipvs-netns", multiple=True,
              help="Read IPVS in this namespace ('host': this one); repeatable.")
@click.option("--drift-interval", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds between drift checks (0: none).")
@bound_options[0]
@bound_options[1]
@with_target_options
def exporter(model_path: str | None, targets: tuple[str, ...], metrics_address: str,
             listen_netns: str | None, ipvs_netns: tuple[str, ...], drift_interval: float,
             max_server_series: int, cardinality: str, **params) -> None:
    """Serve Prometheus metrics of this director's targets (no etcd needed)."""
    from dcnet.metrics.server import serve
    from dcnet.sysio import netns

    chosen = {name: options_for(name, params) for name in targets}
    isolated.one_heap()                    # before any thread: see dcnet.metrics.isolated
    try:
        watch = IsolatedWatch(chosen, model_path, drift_interval,
                              vips=bool(ipvs_netns) or "nft" in chosen)
    except ModelError as exc:
        exit_invalid_model(model_path, exc)
    reg = elb_registry(chosen, watch, Bound(max_server_series, cardinality), list(ipvs_netns))
    try:
        server = serve(reg, metrics_address,
                       netns.path_of(listen_netns) if listen_netns else None)
    except (OSError, ValueError) as exc:
        click.echo(f"elbctl exporter: cannot listen on {metrics_address}: {exc}", err=True)
        sys.exit(3)
    click.echo(f"elbctl exporter: serving {server.url}", err=True)
    try:
        wait_for_signal()
    finally:
        watch.stop.set()
        server.close()


@click.group()
def metrics() -> None:
    """Prometheus discovery and rules for dcnet daemons."""


@metrics.command("sd")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The service model.")
@click.option("--director", "directors", multiple=True,
              help="A director's metrics endpoint HOST:PORT (repeatable).")
@click.option("--agent", "agents", multiple=True,
              help="A dcnet-agent's metrics endpoint HOST:PORT (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here atomically (Prometheus re-reads it) instead of printing.")
def metrics_sd(model_path: str, directors: tuple[str, ...], agents: tuple[str, ...],
               output: str | None) -> None:
    """Print a Prometheus file-SD document for the model's directors and agents."""
    from dcnet.sysio.files import atomic_write

    model = load_model_or_exit(model_path)
    text = sd.render(sd.groups(model, list(directors), list(agents)))
    if output:
        atomic_write(output, text)
    else:
        click.echo(text, nl=False)


@metrics.command("rules")
@click.option("--path", "path_only", is_flag=True, help="Print the file's path only.")
def metrics_rules(path_only: bool) -> None:
    """Print the shipped recording and alert rules (promtool check rules clean)."""
    if path_only:
        click.echo(sd.RULES_PATH)
    else:
        with open(sd.RULES_PATH, encoding="utf-8") as handle:
            click.echo(handle.read(), nl=False)
