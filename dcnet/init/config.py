"""dcnet-init's settings: the command line (argparse: starts in milliseconds, unlike a
richer CLI library) and the platform's injected environment files (``KEY=VALUE``).

Errors are :class:`ConfigError` naming the flag, or the file and line; the caller
prints them and exits 2 before starting anything.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import NamedTuple

FORWARDED = ("TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_FILE = 1 << 20


class ConfigError(ValueError):
    pass


class Check(NamedTuple):
    kind: str            # "tcp", "http" or "cmd"
    target: str          # "HOST:PORT", a URL, or a shell command


class InitConfig(NamedTuple):
    """Everything the supervisor needs (NamedTuple: immutable, no dataclasses import on
    the start-up path)."""

    command: tuple[str, ...]
    env: dict
    health_port: int | None = None
    health_address: str = "0.0.0.0"
    check: Check | None = None
    interval: float = 1.0
    check_timeout: float = 1.0
    rise: int = 1
    fall: int = 3
    on_start: tuple[tuple[str, ...], ...] = ()
    on_drain: tuple[tuple[str, ...], ...] = ()
    on_stop: tuple[tuple[str, ...], ...] = ()
    drain_deadline: float = 30.0
    grace: float = 30.0
    hook_timeout: float = 60.0
    debug: bool = False
    debug_file: str = "/tmp/dcnet-init.last-output"
    verbose: bool = False
    pushgateway: str | None = None
    jobname: str = ""


def parse_check(text: str) -> Check:
    if text.startswith(("http://", "https://")):
        return Check("http", text)
    kind, _, rest = text.partition(":")
    if kind == "tcp" and rest:
        host, _, port = rest.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--check {text!r}: expected tcp:[HOST:]PORT")
        return Check("tcp", f"{host or '127.0.0.1'}:{port}")
    if kind == "cmd" and rest:
        return Check("cmd", rest)
    raise ConfigError(f"--check {text!r}: expected tcp:[HOST:]PORT, http://... or cmd:COMMAND")


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines, optional matching quotes)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ENV_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if len(data) > MAX_ENV_FILE:
        raise ConfigError(f"{path}: larger than {MAX_ENV_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE with KEY a name")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "\0" in value:
            raise ConfigError(f"{path}:{number}: {key}: NUL byte in the value")
        out[key] = value
    return out


def env_files(paths: list[str], env_dir: str | None) -> list[str]:
    files = list(paths)
    if env_dir and os.path.isdir(env_dir):
        files += [os.path.join(env_dir, n) for n in sorted(os.listdir(env_dir))
                  if n.endswith(".env") and not n.startswith(".")]
    return files


def elb_hooks(args) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(add, drain, remove) argv of ``elbctl backend`` for ``--elb-service``."""
    job = args.elb_service or os.environ.get("JOBNAME")
    if not job:
        return (), (), ()
    if not args.elb_server:
        raise ConfigError("--elb-service needs --elb-server ADDR[:PORT]")
    tail = [*args.elb_arg]
    if args.elb_store:
        tail += ["--store", args.elb_store]

    def cmd(action: str) -> tuple[str, ...]:
        return (args.elbctl, "backend", action, job, args.elb_server, *tail)
    return cmd("add"), cmd("drain"), cmd("remove")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dcnet-init", usage="dcnet-init [OPTIONS] -- COMMAND [ARG...]",
        description="Run COMMAND as PID 1's child: forward signals, reap zombies, check "
                    "health, register with the ELB when healthy and drain before exit.")
    p.add_argument("--health-port", type=int, help="Serve GET /health (200/503) here.")
    p.add_argument("--health-address", default="0.0.0.0")
    p.add_argument("--check", help="tcp:[HOST:]PORT, http://URL or cmd:COMMAND "
                                   "(default: healthy once the command runs).")
    p.add_argument("--interval", type=float, default=1.0, help="Seconds between checks.")
    p.add_argument("--check-timeout", type=float, default=1.0)
    p.add_argument("--rise", type=int, default=1, help="Passes in a row to become healthy.")
    p.add_argument("--fall", type=int, default=3, help="Failures in a row to become sick.")
    p.add_argument("--elb-service", help="JOBNAME to register (default $JOBNAME).")
    p.add_argument("--elb-server", help="This instance as ADDR[:PORT].")
    p.add_argument("--elb-store", help="etcd://... (else the local director).")
    p.add_argument("--elb-arg", action="append", default=[],
                   help="Extra argument for every elbctl backend call (repeatable).")
    p.add_argument("--elbctl", default="elbctl", help="The elbctl executable.")
    p.add_argument("--on-start", action="append", default=[], metavar="CMD",
                   help="Shell command run once when healthy (after ELB add).")
    p.add_argument("--on-drain", action="append", default=[], metavar="CMD",
                   help="Shell command run on SIGTERM before the app is signalled.")
    p.add_argument("--on-stop", action="append", default=[], metavar="CMD",
                   help="Shell command run after the app exited (after ELB remove).")
    p.add_argument("--drain-deadline", type=float, default=30.0,
                   help="Longest wait for the drain hooks.")
    p.add_argument("--grace", type=float, default=30.0,
                   help="Seconds between forwarding SIGTERM and SIGKILL of the group.")
    p.add_argument("--hook-timeout", type=float, default=60.0)
    p.add_argument("--env-file", action="append", default=[], help="KEY=VALUE file.")
    p.add_argument("--env-dir", default=os.environ.get("DCNET_INIT_ENV_DIR"),
                   help="Directory of *.env files (default $DCNET_INIT_ENV_DIR).")
    p.add_argument("--inject-env", choices=("on", "off"),
                   default=os.environ.get("DCNET_INIT_INJECT_ENV", "on"),
                   help="Load the env files into the command's environment.")
    p.add_argument("--debug", action="store_true",
                   default=os.environ.get("DCNET_INIT_DEBUG") == "1",
                   help="On a non-zero exit stay up (no restart loop) with the output kept.")
    p.add_argument("--debug-file", default="/tmp/dcnet-init.last-output")
    p.add_argument("--pushgateway", default=os.environ.get("DCNET_PUSHGATEWAY") or None,
                   help="Push the lifecycle (time to healthy, registration, drain, exit "
                        "code) to this Prometheus Pushgateway, HOST:PORT or URL (default "
                        "$DCNET_PUSHGATEWAY; none: no push).")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    return p


def parse(argv: list[str]) -> InitConfig:
    args = build_parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command given (dcnet-init [OPTIONS] -- COMMAND [ARG...])")
    for name in ("interval", "check_timeout", "drain_deadline", "grace", "hook_timeout"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    if args.rise < 1 or args.fall < 1:
        raise ConfigError("--rise and --fall must be at least 1")
    env = dict(os.environ)
    if args.inject_env == "on":
        for path in env_files(args.env_file, args.env_dir):
            env.update(read_env_file(path))
    add, drain, remove = elb_hooks(args)

    def shell(cmds: list[str]) -> tuple[tuple[str, ...], ...]:
        return tuple(("/bin/sh", "-c", c) for c in cmds)
    return InitConfig(
        command=tuple(command), env=env, health_port=args.health_port,
        health_address=args.health_address,
        check=parse_check(args.check) if args.check else None, interval=args.interval,
        check_timeout=args.check_timeout, rise=args.rise, fall=args.fall,
        on_start=((add,) if add else ()) + shell(args.on_start),
        on_drain=((drain,) if drain else ()) + shell(args.on_drain),
        on_stop=((remove,) if remove else ()) + shell(args.on_stop),
        drain_deadline=args.drain_deadline, grace=args.grace, hook_timeout=args.hook_timeout,
        debug=args.debug, debug_file=args.debug_file, verbose=args.verbose,
        pushgateway=args.pushgateway,
        jobname=args.elb_service or os.environ.get("JOBNAME") or "")
