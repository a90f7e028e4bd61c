"""Reading what is installed in a BIND directory: dcnet's own named.conf and zone files.

dcnet renders named.conf and the zone files in a fixed format (``templates/``), so it can
read them back: the server settings digest, each carrier ACL's prefixes, the views in
order, each view's zone declarations (own file or ``in-view``), and every zone file's SOA
serial and content digest. That is the "current state" of the DNS target and the
memory that keeps serials stable. A named.conf that dcnet did not write is refused.
:func:`read_files` reads the texts (the only I/O here), :func:`files_digest` fingerprints
them (is a plan stale?) and :func:`parse_files` reads them (pure).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dcnet.dns.render import NAMED_CONF
from dcnet.dns.serial import Installed
from dcnet.model.types import IPNetwork

_SERVER = re.compile(r"^// dcnet-dns server (\S+)$")
_ACL = re.compile(r'^acl "carrier-([^"]+)" \{$')
_VIEW = re.compile(r'^view "([^"]+)" \{$')
_MATCH = re.compile(r'^\s+match-clients \{ "?([^";]+)"?; \};$')
_ZONE_FILE = re.compile(r'^\s+zone "([^"]+)" \{ type primary; file "([^"]+)"; \};$', re.M)
_ZONE_SHARED = re.compile(r'^\s+zone "([^"]+)" \{ in-view "([^"]+)"; \};$')
_DIGEST = re.compile(r"^; dcnet-dns digest (\S+)$", re.M)
_SOA = re.compile(r"^@ IN SOA \S+ \S+ \( (\d+) ", re.M)


class InstalledError(RuntimeError):
    """The BIND directory holds something dcnet cannot read or does not own."""


@dataclass
class InstalledConfig:
    """What a BIND directory holds, as far as dcnet owns it."""

    present: bool = False
    server_digest: str | None = None
    acls: dict[str, tuple[IPNetwork, ...]] = field(default_factory=dict)
    views: list[tuple[str, str]] = field(default_factory=list)          # (name, match)
    zones: dict[tuple[str, str], dict] = field(default_factory=dict)    # file / in_view
    zone_files: dict[tuple[str, str], Installed] = field(default_factory=dict)


def parse_named_conf(text: str, where: str = NAMED_CONF) -> InstalledConfig:
    config = InstalledConfig(present=True)
    acl: str | None = None
    view: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if acl is not None:
            if line == "};":
                acl = None
                continue
            try:
                config.acls[acl] += (ipaddress.ip_network(line.strip().rstrip(";")),)
            except ValueError as exc:
                raise InstalledError(f"{where}:{lineno}: {exc}") from None
        elif m := _SERVER.match(line):
            config.server_digest = m.group(1)
        elif m := _ACL.match(line):
            acl = m.group(1)
            config.acls[acl] = ()
        elif m := _VIEW.match(line):
            view = m.group(1)
            config.views.append((view, ""))
        elif view is not None and (m := _MATCH.match(line)):
            config.views[-1] = (view, m.group(1))
        elif view is not None and (m := _ZONE_FILE.match(line)):
            config.zones[(view, m.group(1))] = {"file": m.group(2), "in_view": None}
        elif view is not None and (m := _ZONE_SHARED.match(line)):
            config.zones[(view, m.group(1))] = {"file": None, "in_view": m.group(2)}
    if config.server_digest is None:
        raise InstalledError(f"{where} was not written by dcnet (no 'dcnet-dns server' "
                             "line); refusing to manage it")
    return config


def parse_zone_file(text: str) -> Installed | None:
    soa = _SOA.search(text)
    if soa is None:
        return None
    digest = _DIGEST.search(text)
    return Installed(int(soa.group(1)), digest.group(1) if digest else None)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_files(directory: str) -> dict[str, str]:
    """The texts dcnet owns in ``directory``: named.conf, the zone files it declares and
    any other ``db.*`` file (a zone file no longer declared), by file name."""
    files: dict[str, str] = {}
    conf = _read(os.path.join(directory, NAMED_CONF))
    names: set[str] = set()
    if conf is not None:
        files[NAMED_CONF] = conf
        names.update(m.group(2) for m in _ZONE_FILE.finditer(conf))
    with contextlib.suppress(FileNotFoundError):
        names.update(n for n in os.listdir(directory) if n.startswith("db."))
    for name in sorted(names):
        if os.path.basename(name) != name:
            continue            # dcnet only writes plain names in its own directory
        text = _read(os.path.join(directory, name))
        if text is not None:
            files[name] = text
    return files


def files_digest(directory: str, files: Mapping[str, str]) -> str:
    """The fingerprint of what :func:`read_files` found (and where)."""
    h = hashlib.sha256(os.path.abspath(directory).encode())
    for name in sorted(files):
        h.update(b"\0" + name.encode() + b"\0" + files[name].encode())
    return h.hexdigest()[:16]


def parse_files(files: Mapping[str, str], where: str = NAMED_CONF) -> InstalledConfig:
    """What :func:`read_files`' texts say (pure); empty when there is no named.conf."""
    if NAMED_CONF not in files:
        return InstalledConfig()
    config = parse_named_conf(files[NAMED_CONF], where)
    for key, decl in config.zones.items():
        text = files.get(decl["file"]) if decl["file"] else None
        found = parse_zone_file(text) if text is not None else None
        if found is not None:
            config.zone_files[key] = found
    return config


def read_directory(directory: str) -> InstalledConfig:
    """What ``directory`` holds; an empty config when there is no named.conf yet."""
    return parse_files(read_files(directory), os.path.join(directory, NAMED_CONF))
