"""``elbctl mirror``: traffic mirroring and replay (issue #19, docs/mirror.md).

Subcommands: ``rules`` prints (or with ``--apply`` installs, ``--remove`` deletes) the
director's nftables ``dup`` table; ``record`` runs the recorder on the mirror veth (run
it inside the mirror namespace); ``replay`` sends a recording to a target at a factor,
one worker per copy inside the namespaces given with ``--netns`` or made for the run
with ``--pool CIDR --via BRIDGE``; ``live`` replays the same way straight from the
capture, as sessions are reassembled; ``sweep`` removes pools whose owner was killed;
``loadtest`` ramps the factor until an SLO breaks and writes a report with a plot;
``diff`` compares a candidate's answers with two instances of the current version;
``show`` summarises a recording. ``rules``, ``replay``, ``live`` and ``loadtest`` take
what the command line does not give from a model's ``mirror`` section (``-f MODEL``). Exit 1 on
invalid arguments or an invalid model."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import click

from dcnet.cli.common import load_model_or_exit
from dcnet.mirror import (
    anonymise,
    diff,
    live,
    loadtest,
    loadtest_report,
    pcap,
    pool,
    recorder,
    recording,
    replay,
    rules,
)
from dcnet.model.mirror_section import endpoint


@click.group("mirror")
def mirror() -> None:
    """Copy live traffic at the director, record it, replay it (docs/mirror.md)."""


model_file_option = click.option(
    "-f", "--file", "model_path", default=None, type=click.Path(dir_okay=False),
    help="A service model: its mirror section gives every setting not given here.")


def _mirror_settings(model_path: str | None):
    """The model's mirror section (None without -f); exit 1 listing every problem of an
    invalid model, usage error without a mirror section."""
    if model_path is None:
        return None
    settings = load_model_or_exit(model_path).mirror
    if settings is None:
        raise click.UsageError(f"{model_path} has no mirror section")
    return settings


def _replay_settings(settings, target, factor, namespaces, pool_network, via_bridge,
                     via_netns, gateway) -> tuple:
    """target, factor and the pool options: the command line's, else the model's."""
    if settings is not None:
        if target is None and settings.target is not None:
            target = endpoint(*settings.target)
        factor = settings.factor if factor is None else factor
        if not namespaces and pool_network is None and settings.pool is not None:
            model_pool = settings.pool
            pool_network, via_bridge = str(model_pool.network), model_pool.via
            via_netns = via_netns or model_pool.via_netns
            gateway = gateway or (str(model_pool.gateway) if model_pool.gateway else None)
    if target is None:
        raise click.UsageError("--target is required (or a model's mirror.target with -f)")
    return (target, 1.0 if factor is None else factor, namespaces, pool_network, via_bridge,
            via_netns, gateway)


@mirror.command("rules")
@model_file_option
@click.option("--service", "services", multiple=True, metavar="VIP:PORT",
              help="A service whose client->server packets are copied (repeatable).")
@click.option("--to", "to_address", default=None,
              help="IPv4 address of the mirror namespace (for IPv4 VIPs).")
@click.option("--to6", "to_address6", default=None,
              help="IPv6 address of the mirror namespace (for IPv6 VIPs, [VIP6]:PORT).")
@click.option("--device", default=None, help="The director's end of the mirror veth.")
@click.option("--percent", type=click.IntRange(1, 100), default=None,
              help="Share of sessions copied (by hash of client address and port); "
                   "default 100.")
@click.option("--netns", default=None, help="Namespace of the director (default: here).")
@click.option("--apply", "do_apply", is_flag=True, help="Install the table.")
@click.option("--remove", "do_remove", is_flag=True, help="Delete the table.")
def rules_command(model_path, services, to_address, to_address6, device, percent, netns,
                  do_apply, do_remove) -> None:
    """Print, install or remove the director's nft dup tables."""
    settings = _mirror_settings(model_path)
    if settings is not None:
        services = services or settings.services_text()
        to_address = to_address or (str(settings.to) if settings.to else None)
        to_address6 = to_address6 or (str(settings.to6) if settings.to6 else None)
        device = device or settings.device
        percent = settings.percent if percent is None else percent
    if not services or not device:
        raise click.UsageError("--service and --device are required (or -f MODEL with a "
                               "mirror section)")
    percent = 100 if percent is None else percent
    try:
        spec = rules.MirrorSpec(tuple(rules.parse_service(s) for s in services),
                                to_address, device, percent, to_address6)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if do_remove:
        rules.remove(netns)
    elif do_apply:
        rules.apply(spec, netns)
    else:
        click.echo(rules.ruleset(spec), nl=False)


@mirror.command("record")
@click.option("--ifname", required=True, help="The mirror namespace's end of the veth.")
@click.option("--out", required=True, help="Recording to write (JSON lines).")
@click.option("--duration", type=float, default=None, help="Seconds (default: until SIGTERM).")
@click.option("--anonymise-key", default=None,
              help="Replace client addresses by a keyed hash; 'random' for a throwaway key.")
def record_command(ifname, out, duration, anonymise_key) -> None:
    """Record the mirrored sessions (run inside the mirror namespace)."""
    key = None
    if anonymise_key:
        key = os.urandom(32) if anonymise_key == "random" else anonymise_key.encode()
    recorder.run(ifname, out, duration, key)


def pool_options(command):
    """Options choosing the copies' namespaces: existing ones, or a pool made for the run."""
    for option in reversed([
        click.option("--netns", "namespaces", multiple=True,
                     help="An existing namespace per copy (repeatable)."),
        click.option("--pool", "pool_network", default=None, metavar="CIDR",
                     help="Create one namespace and one source address of CIDR per copy "
                          "(removed at the end, also on error and Ctrl-C)."),
        click.option("--via", "via_bridge", default=None, metavar="BRIDGE",
                     help="With --pool: the bridge the copies' veths are ports of."),
        click.option("--via-netns", default=None,
                     help="With --pool: the namespace of that bridge (default: here)."),
        click.option("--gateway", default=None,
                     help="With --pool: the copies' default gateway (default: none, the "
                          "target must be in CIDR)."),
    ]):
        command = option(command)
    return command


@contextlib.contextmanager
def copy_namespaces(namespaces, pool_network, via_bridge, via_netns, gateway, copies: int,
                    target: str):
    """The namespaces the copies run in: ``--netns`` as given, or a fresh pool."""
    if bool(namespaces) == bool(pool_network):
        raise click.UsageError("give either --netns (repeatable) or --pool with --via")
    if namespaces:
        yield list(namespaces)
        return
    if not via_bridge:
        raise click.UsageError("--pool needs --via BRIDGE")
    try:
        made = pool.SourcePool(pool_network, copies, via_bridge, via_netns, gateway,
                               reserved=[_address(target)[0]])
    except (ValueError, pool.PoolError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        made.__enter__()            # a failed build has undone itself
    except pool.PoolError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        click.echo(f"pool: {copies} namespaces {made.prefix}-0..{copies - 1}, sources "
                   f"{made.sources[0]}..{made.sources[-1]}", err=True)
        yield made.namespaces
    finally:
        made.close()


@mirror.command("replay")
@model_file_option
@click.option("--recording", "recording_path", required=True)
@click.option("--target", default=None, metavar="IP:PORT")
@click.option("--factor", type=click.FloatRange(replay.MIN_FACTOR, replay.MAX_FACTOR),
              default=None, help="x0.1 .. x100 (default 1).")
@pool_options
@click.option("--out-dir", required=True, help="Where each copy's results go.")
@click.option("--timing", is_flag=True, help="Keep the recorded gaps (raw TCP sessions).")
@click.option("--speed", type=float, default=1.0, show_default=True)
def replay_command(model_path, recording_path, target, factor, namespaces, pool_network,
                   via_bridge, via_netns, gateway, out_dir, timing, speed) -> None:
    """Replay a recording to a target at a factor, a namespace per copy."""
    target, factor, namespaces, pool_network, via_bridge, via_netns, gateway = \
        _replay_settings(_mirror_settings(model_path), target, factor, namespaces,
                         pool_network, via_bridge, via_netns, gateway)
    os.makedirs(out_dir, exist_ok=True)
    with copy_namespaces(namespaces, pool_network, via_bridge, via_netns, gateway,
                         replay.copy_count(factor), target) as names:
        try:
            summary = replay.run_replay(recording_path, factor, target, names, out_dir,
                                        timing, speed)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2))


@mirror.command("live")
@model_file_option
@click.option("--ifname", default="eth0", show_default=True,
              help="The mirror namespace's end of the veth.")
@click.option("--capture-netns", default=None,
              help="The mirror namespace (default: here); the capture sockets are opened "
                   "there, this command and the pool stay here.")
@click.option("--target", default=None, metavar="IP:PORT")
@click.option("--factor", type=click.FloatRange(replay.MIN_FACTOR, replay.MAX_FACTOR),
              default=None, help="x0.1 .. x100 (default 1).")
@pool_options
@click.option("--out-dir", required=True, help="Where each copy's results go.")
@click.option("--record", "record_path", default=None,
              help="Also write the sessions as a recording.")
@click.option("--anonymise-key", default=None,
              help="Key for the recording's client addresses and the --header values; "
                   "'random' for a throwaway key.")
@click.option("--header", "headers", multiple=True,
              help="HTTP request header whose value the copies send anonymised "
                   "(repeatable; needs --anonymise-key).")
@click.option("--duration", type=float, default=None, help="Seconds (default: until SIGTERM).")
@click.option("--max-backlog", type=click.IntRange(1, 65536), default=live.MAX_BACKLOG >> 20,
              show_default=True, help="MiB queued for one copy before it gets no new "
                                      "session (counted as shed).")
def live_command(model_path, ifname, capture_netns, target, factor, namespaces, pool_network,
                 via_bridge, via_netns, gateway, out_dir, record_path, anonymise_key,
                 headers, duration, max_backlog) -> None:
    """Replay live: the capture feeds the copies as it reassembles sessions (no recording
    file needed), a namespace per copy; stops on SIGTERM/SIGINT or --duration. With -f,
    the model's anonymise settings apply (a random key unless --anonymise-key)."""
    settings = _mirror_settings(model_path)
    target, factor, namespaces, pool_network, via_bridge, via_netns, gateway = \
        _replay_settings(settings, target, factor, namespaces, pool_network, via_bridge,
                         via_netns, gateway)
    clients = True          # without a model: a key anonymises the recording's clients
    if settings is not None:
        headers = headers or settings.anonymise_headers
        clients = settings.anonymise_clients
        if (headers or clients) and not anonymise_key:
            anonymise_key = "random"
    _address(target)
    if headers and not anonymise_key:
        raise click.UsageError("--header needs --anonymise-key")
    key = None
    if anonymise_key:
        key = os.urandom(32) if anonymise_key == "random" else anonymise_key.encode()
    os.makedirs(out_dir, exist_ok=True)
    stop: list[int] = []
    with copy_namespaces(namespaces, pool_network, via_bridge, via_netns, gateway,
                         replay.copy_count(factor), target) as names:
        try:
            runner = live.LiveReplay(ifname, capture_netns, target, factor, names, out_dir,
                                     record_path, key, headers, anonymise_clients=clients,
                                     max_backlog=max_backlog << 20)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        saved = {signum: signal.signal(signum, lambda *_: stop.append(1))
                 for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            summary = runner.run(lambda: bool(stop), duration, ready=lambda: click.echo(
                f"live: capturing on {ifname}, {runner.copies} copies to {target}",
                err=True))
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
    click.echo(json.dumps(summary, indent=2))


def _steps(text: str) -> list[float]:
    try:
        return loadtest.check_steps([float(s) for s in text.split(",") if s.strip()])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@mirror.command("loadtest")
@model_file_option
@click.argument("recording_path")
@click.option("--target", default=None, metavar="IP:PORT")
@click.option("--slo-p99-ms", type=click.FloatRange(min=0), required=True,
              help="The SLO's p99 latency per request, in ms.")
@click.option("--slo-errors", type=click.FloatRange(0, 1), required=True,
              help="The SLO's largest share of failed requests (0.01 = 1%).")
@click.option("--steps", default=",".join(f"{s:g}" for s in loadtest.DEFAULT_STEPS),
              show_default=True, help="Rising factors, comma-separated.")
@pool_options
@click.option("--out-dir", required=True,
              help="Report (loadtest.json, .md, .png) and each step's results.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Sessions at a time per copy.")
def loadtest_command(model_path, recording_path, target, slo_p99_ms, slo_errors, steps,
                     namespaces, pool_network, via_bridge, via_netns, gateway, out_dir,
                     concurrency) -> None:
    """Ramp the replay factor over the steps until the SLO breaks; report the breaking
    point with a plot. Exit 0 either way (the verdict is in the report). With -f, the
    model's mirror target and pool (not its factor: the steps are the factors)."""
    target, _, namespaces, pool_network, via_bridge, via_netns, gateway = \
        _replay_settings(_mirror_settings(model_path), target, None, namespaces,
                         pool_network, via_bridge, via_netns, gateway)
    factors = _steps(steps)
    slo = loadtest.Slo(slo_p99_ms, slo_errors)
    os.makedirs(out_dir, exist_ok=True)

    def progress(stats: dict) -> None:
        click.echo(f"x{stats['factor']:g}: {stats['answered']}/{stats['requests']} answered, "
                   f"p99 {stats['p99_ms']} ms, "
                   f"{'; '.join(stats['breaches']) or 'SLO held'}", err=True)

    with copy_namespaces(namespaces, pool_network, via_bridge, via_netns, gateway,
                         replay.copy_count(factors[-1]), target) as names:
        try:
            report = loadtest.run_loadtest(recording_path, target, slo, names, out_dir,
                                           factors, progress, concurrency)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    paths = loadtest_report.write(report, out_dir)
    click.echo(loadtest_report.verdict(report))
    for path in paths:
        click.echo(path)


@mirror.command("sweep")
def sweep_command() -> None:
    """Remove replay pools whose owner process is gone (it was SIGKILLed): their
    processes, namespaces and bridge ports. A pool in use is never touched."""
    removed = pool.sweep()
    click.echo(f"removed {len(removed)} pool namespaces" + (": " + " ".join(removed)
                                                             if removed else ""))


def _address(text: str) -> tuple[str, int]:
    try:
        return rules.split_address(text)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@mirror.command("diff")
@click.option("--recording", "recording_path", required=True)
@click.option("--candidate", required=True, metavar="IP:PORT", help="The new version.")
@click.option("--primary", required=True, metavar="IP:PORT", help="The current version.")
@click.option("--secondary", required=True, metavar="IP:PORT",
              help="A second instance of the current version (its differences are noise).")
@click.option("--ignore-header", "ignored", multiple=True, default=diff.DEFAULT_IGNORED,
              show_default=True, help="Header never compared (repeatable).")
def diff_command(recording_path, candidate, primary, secondary, ignored) -> None:
    """Send every HTTP session to three targets; report the candidate's differences."""
    report = diff.run_diff(recording.read(recording_path), _address(candidate),
                           _address(primary), _address(secondary), ignored)
    click.echo(json.dumps(report, indent=2))


@mirror.command("anonymise")
@click.option("--recording", "recording_path", required=True)
@click.option("--out", required=True, help="The anonymised recording to write.")
@click.option("--key", required=True,
              help="Key of the keyed hashes; 'random' for a throwaway key (not written).")
@click.option("--header", "headers", multiple=True, default=anonymise.DEFAULT_REDACTED,
              show_default=True, help="Request header whose value is replaced (repeatable).")
@click.option("--clients/--no-clients", default=True, show_default=True,
              help="Replace client addresses too.")
def anonymise_command(recording_path, out, key, headers, clients) -> None:
    """Anonymise a recording before it leaves the director: client addresses and chosen
    HTTP request headers become keyed hashes (the same value, the same token)."""
    secret = os.urandom(32) if key == "random" else key.encode()
    sessions = anonymise.redacted(recording.read(recording_path), headers, secret)
    if clients:
        sessions = recording.anonymised(sessions, secret)
    recording.write(out, sessions)


@mirror.command("export")
@click.option("--recording", "recording_path", required=True)
@click.option("--pcap", "pcap_path", required=True, help="The pcap file to write.")
@click.option("--mss", type=click.IntRange(64, 65000), default=1400, show_default=True)
def export_command(recording_path, pcap_path, mss) -> None:
    """Write a recording as a pcap file (the clients' side of each TCP session, raw IP
    link type), for Wireshark, tcpdump or tcpreplay."""
    count = pcap.write(pcap_path, recording.read(recording_path), mss)
    click.echo(f"{count} packets written to {pcap_path}")


@mirror.command("show")
@click.argument("recording_path")
def show_command(recording_path) -> None:
    """Summarise a recording: sessions, bytes, missing bytes, how sessions ended."""
    sessions = recording.read(recording_path)
    ends: dict[str, int] = {}
    for session in sessions:
        ends[session.end] = ends.get(session.end, 0) + 1
    click.echo(json.dumps({
        "sessions": len(sessions), "bytes": sum(len(s.payload) for s in sessions),
        "missing": sum(s.missing for s in sessions),
        "without_syn": sum(1 for s in sessions if not s.syn), "ends": ends}, indent=2))


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(mirror)
