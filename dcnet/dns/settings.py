"""The DNS target's settings: its options (flags and DCNET_DNS_* variables) in one place.

:data:`OPTIONS` declares every setting as a :class:`dcnet.target.Option` (keyword, flag,
environment variable, default): ``elbctl plan|apply --target dns`` builds its flags from
them and :func:`dcnet.target.registry.create` resolves given value -> variable ->
default, so the target itself never reads the environment. :func:`build` turns resolved
values into :class:`Settings` (pure); :func:`from_env` is the same for callers outside
the target contract (``elbctl render dns``, the demo, the benchmark).

``directory`` (``--dns-dir``, ``DCNET_DNS_DIR``: the BIND directory holding named.conf
and the zone files; default ``/etc/bind/dcnet``), ``key_file`` (``DCNET_DNS_RNDC_KEY``,
default ``<dir>/rndc.key``), ``control`` (``DCNET_DNS_CONTROL``: rndc address and port,
default ``127.0.0.1:953``), ``port`` (``DCNET_DNS_PORT``, 53), ``listen``
(``DCNET_DNS_LISTEN``: comma-separated listen addresses, default ``any``; IPv6 ones
go to ``listen-on-v6``),
``ns_address`` (``DCNET_DNS_NS_ADDRESS``: the zone's NS address, default 127.0.0.1),
``netns`` (``DCNET_DNS_NETNS``: run rndc inside this network namespace) and ``force``
(elbctl's ``--force`` or ``DCNET_DNS_FORCE=1``: a carrier list may change more than 30%).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dcnet.target.base import Option, TargetError

if TYPE_CHECKING:
    from dcnet.dns.render import ServerOptions

DEFAULT_DIR = "/etc/bind/dcnet"
DEFAULT_CONTROL = "127.0.0.1:953"

OPTIONS: tuple[Option, ...] = (
    Option("directory", "dns-dir", "BIND directory holding named.conf and the zone files.",
           str, DEFAULT_DIR, "DCNET_DNS_DIR", path=True),
    Option("force", "", "Let a carrier list change more than 30% of its installed prefixes.",
           bool, False, "DCNET_DNS_FORCE", is_flag=True),
    Option("key_file", "dns-rndc-key", "rndc key file (default <dns-dir>/rndc.key).",
           str, None, "DCNET_DNS_RNDC_KEY", path=True),
    Option("control", "dns-control", "rndc control channel ADDRESS:PORT.",
           str, DEFAULT_CONTROL, "DCNET_DNS_CONTROL"),
    Option("port", "dns-port", "Port named answers on.", int, 53, "DCNET_DNS_PORT"),
    Option("listen", "dns-listen", "Comma-separated addresses named listens on (IPv6 "
           "ones: listen-on-v6).",
           str, "any", "DCNET_DNS_LISTEN"),
    Option("ns_address", "dns-ns-address", "Address of the zones' own NS record.",
           str, "127.0.0.1", "DCNET_DNS_NS_ADDRESS"),
    Option("netns", "dns-netns", "Run rndc inside this network namespace.",
           str, None, "DCNET_DNS_NETNS"),
)


@dataclass(frozen=True)
class Settings:
    directory: str
    server: ServerOptions
    netns: str | None = None
    force: bool = False


def _split_control(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise TargetError(f"dns: the rndc control channel must be ADDRESS:PORT "
                          f"(--dns-control, $DCNET_DNS_CONTROL), not {text!r}")
    return address, int(port)


def build(directory: str = DEFAULT_DIR, key_file: str | None = None,
          control: str = DEFAULT_CONTROL, port: int = 53, listen: str = "any",
          ns_address: str = "127.0.0.1", netns: str | None = None,
          force: bool = False) -> Settings:
    """Settings from resolved option values (pure: no environment)."""
    directory = os.path.abspath(directory or DEFAULT_DIR)
    address, control_port = _split_control(control or DEFAULT_CONTROL)
    # IPv6 addresses in the list go to listen-on-v6 (none when the list has none)
    listen_all = [a.strip() for a in (listen or "any").split(",") if a.strip()]
    from dcnet.dns.render import ServerOptions  # jinja2: not for the options alone

    server = ServerOptions(
        directory=directory,
        port=int(port or 53),
        listen=tuple(a for a in listen_all if ":" not in a) or ("none",),
        listen_v6=tuple(a for a in listen_all if ":" in a) or ("none",),
        key_file=key_file or os.path.join(directory, "rndc.key"),
        control_address=address,
        control_port=control_port,
        ns_address=ns_address or "127.0.0.1",
    )
    return Settings(directory, server, netns or None, bool(force))


def from_env(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``overrides`` (None values ignored), then ``env``'s DCNET_DNS_*
    variables (as :data:`OPTIONS` names them), then the defaults."""
    env = os.environ if env is None else env
    values = {}
    for opt in OPTIONS:
        value = overrides.pop(opt.name, None)
        if value is None and opt.envvar and env.get(opt.envvar):
            raw = env[opt.envvar]
            value = (raw.strip().lower() in ("1", "true", "yes", "on") if opt.is_flag
                     else opt.type(raw))
        if value is not None:
            values[opt.name] = value
    if overrides:
        raise TypeError(f"unknown DNS settings: {', '.join(sorted(overrides))}")
    return build(**values)
