"""Where the DNS back end's settings come from: click options, else DCNET_DNS_* variables.

``DCNET_DNS_DIR`` (the BIND directory holding named.conf and the zone files; default
``/etc/bind/dcnet``), ``DCNET_DNS_RNDC_KEY`` (default ``<dir>/rndc.key``),
``DCNET_DNS_CONTROL`` (rndc address and port, default ``127.0.0.1:953``),
``DCNET_DNS_PORT`` (53), ``DCNET_DNS_LISTEN`` (comma-separated IPv4 listen addresses,
default ``any``), ``DCNET_DNS_NS_ADDRESS`` (the zone's NS address, default 127.0.0.1),
``DCNET_DNS_NETNS`` (run rndc inside this network namespace) and ``DCNET_DNS_FORCE``
(``1`` lets a carrier list change more than 30%).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dcnet.dns.render import ServerOptions

DEFAULT_DIR = "/etc/bind/dcnet"


@dataclass(frozen=True)
class Settings:
    directory: str
    server: ServerOptions
    netns: str | None = None
    force: bool = False


def _split_control(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise ValueError(f"DCNET_DNS_CONTROL must be ADDRESS:PORT, not {text!r}")
    return address, int(port)


def from_env(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``overrides`` (None values ignored), then ``env``, then defaults."""
    env = os.environ if env is None else env
    given = {k: v for k, v in overrides.items() if v is not None}
    directory = os.path.abspath(given.get("directory") or env.get("DCNET_DNS_DIR")
                                or DEFAULT_DIR)
    key_file = (given.get("key_file") or env.get("DCNET_DNS_RNDC_KEY")
                or os.path.join(directory, "rndc.key"))
    control = given.get("control") or env.get("DCNET_DNS_CONTROL") or "127.0.0.1:953"
    address, control_port = _split_control(control)
    listen = given.get("listen") or env.get("DCNET_DNS_LISTEN") or "any"
    server = ServerOptions(
        directory=directory,
        port=int(given.get("port") or env.get("DCNET_DNS_PORT") or 53),
        listen=tuple(a.strip() for a in listen.split(",") if a.strip()),
        key_file=key_file or None,
        control_address=address,
        control_port=control_port,
        ns_address=given.get("ns_address") or env.get("DCNET_DNS_NS_ADDRESS") or "127.0.0.1",
    )
    force = bool(given.get("force")) or env.get("DCNET_DNS_FORCE", "") in ("1", "yes", "true")
    return Settings(directory, server, given.get("netns") or env.get("DCNET_DNS_NETNS") or None,
                    force)
