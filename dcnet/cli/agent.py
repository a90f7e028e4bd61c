"""``dcnet-agent``: the node agent (host-gw routes and subnet lease; macvlan DHCP leases).

host-gw: ``dcnet-agent run --conf FILE --node NAME (--node-ip IP | --iface IF)`` reconciles
the node and then reacts to store and kernel changes until SIGTERM/SIGINT; ``once`` does
one pass; ``leave`` gives the node's subnet back (other agents then drop their route to
it). Routes stay in place when the agent stops, so pods keep talking while it restarts
(``--leave-on-exit`` gives the subnet back on SIGTERM instead). ``--store`` overrides the
config's store: ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?ca=...&cert=...&key=...&user=
...&password-file=...]`` (``etcds://`` for TLS; see dcnet.sysio.etcd.parse_url) or
``file:///DIR``; ``--lease-ttl`` sets the etcd lease TTL.

Both modes also serve the ``dcnet`` shim (``dcnet.cni.execd``): whole CNI invocations of
this network namespace run here, pre-imported, instead of in a fresh interpreter per pod
(``--exec-dir``, or ``--no-serve-cni`` to leave every invocation to ``dcnet-python``).

macvlan (the config's ``mode``): ``dcnet-agent run --conf FILE`` serves the plugin on its
unix socket, holds and renews every pod's DHCP lease and resumes them after a restart;
stopping it keeps the leases (they are journaled), so pods keep their addresses.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

import click


def store_spec(configured: dict, url: str | None, lease_ttl: int | None) -> dict:
    """The store section to open: the config's, or the one ``--store URL`` names."""
    if url is None:
        spec = dict(configured)
    elif url.startswith(("etcd://", "etcds://")):
        spec = {"type": "etcd", "url": url}
    elif url.startswith("file://"):
        spec = {"type": "file", "path": url[len("file://"):]}
    else:
        raise click.BadParameter(f"{url!r}: expected etcd://..., etcds://... or file:///DIR",
                                 param_hint="--store")
    if lease_ttl is not None:
        if spec.get("type") != "etcd":
            raise click.BadParameter("only an etcd store has leases with a TTL",
                                     param_hint="--lease-ttl")
        spec["leaseTTL"] = lease_ttl
    return spec


def _make_agent(conf_path: str, node: str | None, node_ip: str | None, iface: str | None,
                store_url: str | None = None, lease_ttl: int | None = None):
    from dcnet.cni.agent import Agent, AgentError
    from dcnet.cni.errors import CniError
    from dcnet.cni.install import load_conf_file
    from dcnet.cni.store import open_store

    try:
        conf = load_conf_file(conf_path)
        store = open_store(store_spec(conf.store, store_url, lease_ttl), conf.name)
    except (OSError, ValueError, CniError, AgentError) as exc:
        click.echo(f"dcnet-agent: {conf_path}: {exc}", err=True)
        sys.exit(2)
    try:
        return Agent(conf, store, node or socket.gethostname(), node_ip, iface)
    except AgentError as exc:
        store.close()
        click.echo(f"dcnet-agent: {conf_path}: {exc}", err=True)
        sys.exit(2)


def _mode(conf_path: str) -> str | None:
    from dcnet.cni.errors import CniError
    from dcnet.cni.install import load_conf_file

    try:
        return load_conf_file(conf_path).mode
    except (OSError, ValueError, CniError) as exc:
        click.echo(f"dcnet-agent: {conf_path}: {exc}", err=True)
        sys.exit(2)


def _serve_cni(exec_dir: str | None, enabled: bool):
    """Start serving the shim (None when disabled or the socket is taken)."""
    if not enabled:
        return None
    from dcnet.cni import execd

    return execd.start(exec_dir or execd.DEFAULT_DIR)


def _serve_metrics(address: str | None, agent):
    """Serve ``/metrics`` of ``agent`` on ``address`` (None: no metrics)."""
    from dcnet.metrics.cni import serve_agent

    try:
        return serve_agent(address, agent)
    except (OSError, ValueError) as exc:
        click.echo(f"dcnet-agent: cannot serve metrics on {address}: {exc}", err=True)
        sys.exit(3)


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class _Signals:
    """SIGTERM/SIGINT, blocked in this thread and so in every thread started after it
    (they inherit the mask), taken by a thread of its own with sigwait: it calls
    ``request_stop`` once the agent exists (set by ``_stop_on_signal``), or exits as the
    default action would before that. (A Python handler runs only in the main thread
    once it wakes: with the signal delivered to another thread, a main thread waiting
    on an Event slept on until its resync; seen as an agent ignoring SIGTERM during a
    rolling restart under load.)"""

    request_stop = None

    @classmethod
    def block(cls) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        threading.Thread(target=cls._wait, name="signals", daemon=True).start()

    @classmethod
    def _wait(cls) -> None:
        signum = signal.sigwait(_STOP_SIGNALS)
        if cls.request_stop is None:
            os._exit(128 + signum)
        cls.request_stop()


def _block_stop_signals() -> None:
    _Signals.block()


def _stop_on_signal(request_stop) -> None:
    _Signals.request_stop = request_stop


HANDOVER = 5.0


def _hand_over(agent, server) -> None:
    """A stopping host-gw agent lets a standby take over before it stops serving: it
    releases both locks, keeps answering the shim (the socket stays bound) until the
    successor has published node.json and renamed its socket into place (``HANDOVER``
    seconds at most; 0.5 s when no standby took the lock). Otherwise ADDs in the gap
    between the old agent's exit and the new one's node.json fell back and failed (code
    11, seen in ``bench/cni_add.py --rolling-restart``). Both serving for a moment is
    safe: IPAM serialises on its flock, as it does with the fallback process."""
    import json
    import time

    agent.lock.release()  # the standby's run() reconciles and writes node.json
    if server is None or server.sock is None:
        return
    server.lock.release()  # the standby binds and renames its socket over ours

    def succeeded() -> bool:
        try:
            with open(agent.conf.node_file) as handle:
                if json.load(handle).get("agentPid") == os.getpid():
                    return False
            return os.stat(server.path).st_ino != server.inode
        except (OSError, ValueError):
            return False
    started = time.monotonic()
    while not succeeded():
        waited = time.monotonic() - started
        if waited > HANDOVER or (waited > 0.5 and not _lock_taken(agent.lock.path)):
            return  # a successor too slow, or none standing by
        time.sleep(0.02)
    time.sleep(0.2)  # serve what queued on our socket before the rename (backlog)


def _lock_taken(path: str) -> bool:
    """Whether another process holds the flock at ``path`` (a standby took over)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (drops our probe's lock if it got it)
    return False


def _run_macvlan(conf_path: str, sweep: float, exec_dir: str | None,
                 serve_cni: bool, metrics_address: str | None = None) -> None:
    import logging

    from dcnet.cni.dhcpagent import MacvlanAgent
    from dcnet.cni.install import load_conf_file

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="dcnet-agent: %(name)s: %(message)s")
    agent = MacvlanAgent(load_conf_file(conf_path))

    _stop_on_signal(agent.request_stop)
    agent.log(f"macvlan network {agent.conf.name}: journal {agent.conf.lease_dir}")
    server = _serve_cni(exec_dir, serve_cni)
    metrics = _serve_metrics(metrics_address, agent)
    try:
        agent.run(sweep=sweep)
    except Exception as exc:
        click.echo(f"dcnet-agent: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        if server is not None:
            server.close()
        if metrics is not None:
            metrics.close()


_COMMON = [
    click.option("--conf", "conf_path", required=True, type=click.Path(dir_okay=False),
                 help="The CNI .conf/.conflist holding the dcnet config."),
    click.option("--node", default=None, help="Node name (default: the host name)."),
    click.option("--node-ip", default=None,
                 help="This node's underlay address: IPv4, IPv6, or 'v4,v6' (dual stack)."),
    click.option("--iface", default=None, help="Take the node IP from this interface."),
    click.option("--store", "store_url", default=None, metavar="URL",
                 help="Where node subnet leases live: etcd://HOST:PORT[,...][/PREFIX][?...] "
                      "(etcds:// for TLS) or file:///DIR (default: the config's store)."),
    click.option("--lease-ttl", type=click.IntRange(2, 3600), default=None,
                 help="etcd store: TTL in seconds of this node's lease (default 20)."),
]


def _common(func):
    for option in reversed(_COMMON):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """dcnet node agent (host-gw routes, macvlan DHCP leases)."""


@cli.command()
@_common
@click.option("--resync", default=300.0, show_default=True,
              help="Safety resync period in seconds (changes are handled as they happen).")
@click.option("--sweep", default=5.0, show_default=True,
              help="macvlan: seconds between checks for gone pods and queued releases.")
@click.option("--exec-dir", default=None,
              help="Directory of the shim's sockets (default /run/dcnet/exec).")
@click.option("--serve-cni/--no-serve-cni", default=True, show_default=True,
              help="Serve the dcnet shim's CNI invocations in this process.")
@click.option("--leave-on-exit", is_flag=True,
              help="host-gw: release the node's subnet when stopped (default: keep it, so "
                   "a restart changes nothing).")
@click.option("--metrics-address", default=None, envvar="DCNET_AGENT_METRICS_ADDRESS",
              help="Serve Prometheus /metrics on HOST:PORT (default: none).")
def run(conf_path: str, node: str | None, node_ip: str | None, iface: str | None,
        store_url: str | None, lease_ttl: int | None, resync: float, sweep: float,
        exec_dir: str | None, serve_cni: bool, leave_on_exit: bool,
        metrics_address: str | None) -> None:
    """Keep this node's subnet, bridge and routes (or its pods' DHCP leases) right."""
    _block_stop_signals()  # before any thread starts
    if _mode(conf_path) == "macvlan":
        _run_macvlan(conf_path, sweep, exec_dir, serve_cni, metrics_address)
        return
    agent = _make_agent(conf_path, node, node_ip, iface, store_url, lease_ttl)

    _stop_on_signal(agent.request_stop)
    agent.log(f"node {agent.node}: watching {conf_path}")
    server = _serve_cni(exec_dir, serve_cni)
    metrics = _serve_metrics(metrics_address, agent)
    try:
        agent.run(resync=resync, leave_on_exit=leave_on_exit)
    finally:
        _hand_over(agent, server)
        if server is not None:
            server.close()
        if metrics is not None:
            metrics.close()
        agent.close()
        agent.store.close()


@cli.command()
@_common
def once(conf_path: str, node: str | None, node_ip: str | None, iface: str | None,
         store_url: str | None, lease_ttl: int | None) -> None:
    """One reconcile pass, then exit (non-zero if it failed)."""
    agent = _make_agent(conf_path, node, node_ip, iface, store_url, lease_ttl)
    try:
        result = agent.reconcile()
    except Exception as exc:
        click.echo(f"dcnet-agent: {exc}", err=True)
        sys.exit(1)
    finally:
        agent.close()
        agent.store.close()
    subnets = ", ".join(le.subnet for le in result.get("leases", {}).values())
    changes = result["changes"] or "none"
    click.echo(f"lease {subnets or result['lease'].subnet}; changes: {changes}")
    if result["degraded"]:
        click.echo(f"degraded: {result['degraded']}")
    for problem in result["refused"]:
        click.echo(problem)


@cli.command()
@_common
def leave(conf_path: str, node: str | None, node_ip: str | None, iface: str | None,
          store_url: str | None, lease_ttl: int | None) -> None:
    """Release this node's subnet lease and remove this agent's routes."""
    agent = _make_agent(conf_path, node, node_ip or "0.0.0.0", iface, store_url, lease_ttl)
    try:
        lease = agent.leave()
    except Exception as exc:
        click.echo(f"dcnet-agent: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        agent.close()
        agent.store.close()
    click.echo(f"released {lease.subnet}" if lease else "no lease held")


def main() -> None:
    cli(prog_name="dcnet-agent")
