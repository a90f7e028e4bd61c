"""The CNI skeleton: env and stdin in, a plugin function called, JSON out.

Shaped like containernetworking's ``pkg/skel``: ``dispatch`` reads the environment and
stdin (both injectable), validates them as skel and libcni do (required variables per
command, container id, interface and network names, cniVersion support, CHECK needing
0.4.0+, GC and STATUS needing 1.1.0+, CNI_NETNS not being the plugin's own namespace),
calls the plugin's ``add``/``delete``/``check``/``status``/``gc`` and writes either the
result, converted to the config's version, or ``{"cniVersion","code","msg","details"}``
on stdout. It returns the process exit code. Logs go to stderr only.
"""

from __future__ import annotations

import os

from dcnet.cni import cjson
from dcnet.cni import version as versions
from dcnet.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    INVALID_NETNS,
    IO_FAILURE,
    UNKNOWN_CONTAINER,
    CniError,
)
from dcnet.cni.nsref import resolve

COMMANDS = ("ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION")
# variable -> commands that require it (as in skel.getCmdArgsFromEnv)
REQUIRED = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC", "STATUS"),
}
MINIMUM = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
ABOUT = "dcnet CNI plugin (host-gw, macvlan)"


class CmdArgs:
    """What one invocation carries: env values plus the decoded stdin config."""

    __slots__ = ("args", "command", "conf", "container_id", "ifname", "netns",
                 "netns_override", "path")

    def __init__(self, command: str, env: dict, conf: dict):
        self.command = command
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.args = env.get("CNI_ARGS", "")
        self.path = env.get("CNI_PATH", "")
        self.netns_override = env.get("CNI_NETNS_OVERRIDE", "")
        self.conf = conf


def valid_name(name: str) -> bool:
    """skel's ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`` without importing re."""
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def check_ifname(name: str) -> None:
    if not name:
        raise CniError(INVALID_ENV, "interface name is empty")
    if len(name) > 15:
        raise CniError(INVALID_ENV, "interface name is too long",
                       "interface name should be less than 16 characters")
    if name in (".", ".."):
        raise CniError(INVALID_ENV, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in name):
        raise CniError(INVALID_ENV, "interface name contains / or : or whitespace characters")


def env_command(env: dict) -> str:
    """Validate the environment for its command; returns the command."""
    command = env.get("CNI_COMMAND", "")
    missing = [] if command else ["CNI_COMMAND"]
    for var, needed_by in REQUIRED.items():
        value = env.get(var, "")
        if not value:
            if command in needed_by:
                missing.append(var)
        elif command in needed_by and var == "CNI_CONTAINERID" and not valid_name(value):
            raise CniError(INVALID_ENV, "invalid characters in containerID", value)
        elif command in needed_by and var == "CNI_IFNAME":
            check_ifname(value)
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    return command


def decode_conf(data: bytes | str) -> dict:
    """stdin JSON -> dict; the dcnet entry when a whole conflist was given."""
    from dcnet.cni.config import pick_plugin

    try:
        conf = cjson.loads(data)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, f"error unmarshall network config: {exc}") from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "error unmarshall network config: not a JSON object")
    conf = pick_plugin(conf)
    name = conf.get("name")
    if not name:
        raise CniError(INVALID_CONFIG, "missing network name")
    if not isinstance(name, str) or not valid_name(name):
        raise CniError(INVALID_CONFIG, "invalid characters found in network name", str(name))
    return conf


def check_version(command: str, conf: dict) -> str:
    config_version = versions.decode_version(conf)
    versions.parse(config_version)
    minimum = MINIMUM.get(command)
    if minimum and not versions.at_least(config_version, minimum):
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f"{command} needs cniVersion {minimum} or later, config is "
                       f"{config_version}")
    if config_version not in versions.SUPPORTED:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {config_version!r}, plugin supports "
                       f"{list(versions.SUPPORTED)}")
    return config_version


def check_netns(args: CmdArgs) -> None:
    """CNI_NETNS must not be the plugin's own namespace (skel's ErrInvalidNetNS)."""
    if not args.netns or args.netns_override.upper() in ("TRUE", "1"):
        return
    try:
        target = os.stat(resolve(args.netns))
    except OSError:
        return  # the plugin itself reports a missing namespace
    own = os.stat("/proc/self/ns/net")
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise CniError(INVALID_NETNS,
                       "plugin's netns and netns from CNI_NETNS should not be the same")


def dispatch(plugin, env: dict | None = None, stdin=None, stdout=None, stderr=None) -> int:
    """Run one CNI command against ``plugin``; returns the exit code (0 or 1)."""
    import sys

    env = os.environ if env is None else env
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    out_version = versions.CURRENT
    try:
        if not env.get("CNI_COMMAND"):
            stderr.write(f"{ABOUT}\nCNI protocol versions supported: "
                         f"{', '.join(versions.SUPPORTED)}\n")
            return 0
        command = env_command(env)
        if command == "VERSION":
            _write(stdout, versions.version_info())
            return 0
        try:
            data = stdin.read()
        except OSError as exc:
            raise CniError(IO_FAILURE, f"error reading from stdin: {exc}") from None
        conf = decode_conf(data)
        config_version = check_version(command, conf)
        out_version = config_version
        args = CmdArgs(command, env, conf)
        if command in ("ADD", "DEL"):
            check_netns(args)
        result = _call(plugin, args)
        if command == "ADD":
            _write(stdout, versions.convert(result, config_version))
        elif command == "CHECK" or command == "DEL" or command == "STATUS":
            pass
        elif command == "GC" and result:
            stderr.write(cjson.dumps(result) + "\n")
        return 0
    except CniError as exc:
        _write(stdout, exc.to_json(out_version))
        stderr.write(f"dcnet: {exc}\n")
        return 1


def _call(plugin, args: CmdArgs):
    handler = {"ADD": plugin.add, "DEL": plugin.delete, "CHECK": plugin.check,
               "STATUS": plugin.status, "GC": plugin.gc}[args.command]
    try:
        return handler(args)
    except CniError:
        raise
    except FileNotFoundError as exc:
        if args.command != "DEL" and exc.filename in (args.netns, resolve(args.netns)):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist",
                           str(exc)) from None
        raise CniError(IO_FAILURE, str(exc)) from None
    except OSError as exc:
        raise CniError(IO_FAILURE, str(exc)) from None
    except Exception as exc:  # anything unexpected still answers as CNI asks
        raise CniError(INTERNAL, f"{type(exc).__name__}: {exc}") from None


def _write(stdout, obj: dict) -> None:
    stdout.write(cjson.dumps(obj))
    stdout.write("\n")
    stdout.flush()
