"""Store URLs: parsing ``etcd://`` / ``etcds://`` URLs into :class:`Settings` (where and
how to reach etcd: endpoints, key prefix, TLS files, user and password, timeout)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PORT = 2379


@dataclass(frozen=True)
class Settings:
    """Where and how to reach etcd (see :func:`parse_url`)."""

    endpoints: tuple[str, ...]
    prefix: str = ""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 5.0


_URL_OPTIONS = ("ca", "cert", "key", "user", "password-file", "timeout")


def parse_url(url: str) -> Settings:
    """Parse ``etcd[s]://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`` into Settings.

    Options: ca=PATH, cert=PATH, key=PATH, user=NAME, password-file=PATH,
    timeout=SECONDS. etcds:// (or ca=/cert= given) means https. Raises ValueError
    naming the bad part.
    """
    from urllib.parse import parse_qsl

    where = f"store URL {url!r}"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise ValueError(f"{where}: scheme must be etcd:// or etcds://")
    rest, _, query = rest.partition("?")
    hostpart, slash, path = rest.partition("/")
    if not hostpart:
        raise ValueError(f"{where}: no HOST:PORT given")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"{where}: malformed query {query!r}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in _URL_OPTIONS:
            raise ValueError(f"{where}: unknown option {name!r} "
                             f"(known: {', '.join(_URL_OPTIONS)})")
        if name in options:
            raise ValueError(f"{where}: option {name!r} given twice")
        if not value:
            raise ValueError(f"{where}: option {name!r} is empty")
        options[name] = value
    secure = scheme == "etcds" or "ca" in options or "cert" in options
    endpoints = tuple(_parse_hostport(item, where, secure) for item in hostpart.split(","))
    prefix = ("/" + path).rstrip("/") if slash else ""
    for name in ("ca", "cert", "key"):
        if name in options and not os.path.isfile(options[name]):
            raise ValueError(f"{where}: {name} file {options[name]!r} not found")
    if ("cert" in options) != ("key" in options):
        raise ValueError(f"{where}: cert= and key= must be given together")
    password = None
    if "password-file" in options:
        if "user" not in options:
            raise ValueError(f"{where}: password-file= needs user=")
        password = _read_password(options["password-file"], where)
    elif "user" in options:
        raise ValueError(f"{where}: user= needs password-file=")
    timeout = 5.0
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < 3600:
            raise ValueError(f"{where}: timeout {options['timeout']!r} is not a number of "
                             f"seconds in (0, 3600)")
    return Settings(endpoints=endpoints, prefix=prefix, ca=options.get("ca"),
                    cert=options.get("cert"), key=options.get("key"),
                    user=options.get("user"), password=password, timeout=timeout)


def _parse_hostport(item: str, where: str, secure: bool) -> str:
    if not item:
        raise ValueError(f"{where}: empty HOST:PORT in the host list")
    if item.startswith("["):
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"{where}: bad IPv6 HOST:PORT {item!r}")
        port_text = port_text[1:]
        host_text = f"[{host}]"
    else:
        host, _, port_text = item.partition(":")
        host_text = host
    if not host or any(c in host for c in "@/ "):
        raise ValueError(f"{where}: bad host in {item!r}")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{where}: bad port {port_text!r} in {item!r}")
        port = int(port_text)
    return f"{'https' if secure else 'http'}://{host_text}:{port}"


def _read_password(path: str, where: str) -> str:
    try:
        with open(path) as handle:
            password = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{where}: cannot read password-file {path!r}: "
                         f"{exc.strerror}") from None
    if not password:
        raise ValueError(f"{where}: password-file {path!r} is empty")
    return password
