"""``elbctl mirror``: traffic mirroring and replay (issue #19, docs/mirror.md).

Subcommands: ``rules`` prints (or with ``--apply`` installs, ``--remove`` deletes) the
director's nftables ``dup`` table; ``record`` runs the recorder on the mirror veth (run
it inside the mirror namespace); ``replay`` sends a recording to a target at a factor,
one worker per copy inside the namespaces given with ``--netns``; ``diff`` compares a
candidate's answers with two instances of the current version; ``show`` summarises a
recording. Exit 1 on invalid arguments.
"""

from __future__ import annotations

import json
import os

import click

from dcnet.mirror import anonymise, diff, pcap, recorder, recording, replay, rules


@click.group("mirror")
def mirror() -> None:
    """Copy live traffic at the director, record it, replay it (docs/mirror.md)."""


@mirror.command("rules")
@click.option("--service", "services", multiple=True, required=True, metavar="VIP:PORT",
              help="A service whose client->server packets are copied (repeatable).")
@click.option("--to", "to_address", required=True, help="Address of the mirror namespace.")
@click.option("--device", required=True, help="The director's end of the mirror veth.")
@click.option("--percent", type=click.IntRange(1, 100), default=100, show_default=True,
              help="Share of sessions copied (by hash of client address and port).")
@click.option("--netns", default=None, help="Namespace of the director (default: here).")
@click.option("--apply", "do_apply", is_flag=True, help="Install the table.")
@click.option("--remove", "do_remove", is_flag=True, help="Delete the table.")
def rules_command(services, to_address, device, percent, netns, do_apply, do_remove) -> None:
    """Print, install or remove the director's nft dup table."""
    try:
        spec = rules.MirrorSpec(tuple(rules.parse_service(s) for s in services),
                                to_address, device, percent)
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


@mirror.command("replay")
@click.option("--recording", "recording_path", required=True)
@click.option("--target", required=True, metavar="IP:PORT")
@click.option("--factor", type=click.FloatRange(replay.MIN_FACTOR, replay.MAX_FACTOR),
              default=1.0, show_default=True)
@click.option("--netns", "namespaces", multiple=True, required=True,
              help="A namespace per copy, each with its own source address (repeatable).")
@click.option("--out-dir", required=True, help="Where each copy's results go.")
@click.option("--timing", is_flag=True, help="Keep the recorded gaps (raw TCP sessions).")
@click.option("--speed", type=float, default=1.0, show_default=True)
def replay_command(recording_path, target, factor, namespaces, out_dir, timing, speed) -> None:
    """Replay a recording to a target at a factor, a namespace per copy."""
    os.makedirs(out_dir, exist_ok=True)
    try:
        summary = replay.run_replay(recording_path, factor, target, namespaces, out_dir,
                                    timing, speed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.UsageError(f"bad address {text!r} (IP:PORT)")
    return host, int(port)


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
