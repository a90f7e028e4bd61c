"""Loading a service model: YAML text -> validated, immutable :class:`Model`.

``load_model(path)`` is the only function here that touches the file system (it reads
the model and the carriers' CIDR list files, through :mod:`dcnet.model.inputs`: bounded
size, UTF-8 only, list files confined to the model's directory or an allow-list);
``parse_model`` is pure given a ``read_text`` callable. Every problem is collected and
reported together, each with file, line and field path, by raising
:class:`~dcnet.model.errors.ModelError`; a CIDR list's own lines are never quoted.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable

from dcnet.gcpause import paused_gc
from dcnet.model import fields as f
from dcnet.model import inputs
from dcnet.model.cidrlists import overlaps
from dcnet.model.errors import ModelError, Problem
from dcnet.model.jobname import JobName
from dcnet.model.rules import check_model, check_real_servers
from dcnet.model.sections import SECTIONS
from dcnet.model.types import (
    MAX_WEIGHT,
    PORT_MODES,
    SCHEDULERS,
    Carrier,
    CheckType,
    Forwarding,
    HealthCheck,
    Model,
    Port,
    Protocol,
    RealServer,
    Service,
)
from dcnet.model.yamlsource import LocatedData, Path, YAMLSourceError, load_located

MODEL_VERSION = 1
ReadText = Callable[[str], str]
Spill = Callable[[Service], object]

_NAME = f.text(r"[a-z][a-z0-9-]{0,30}", "lower-case letters, digits and '-', starting "
               "with a letter, at most 31 characters")
_IFNAME = f.text(r"[^\s/:]{1,15}", "an interface name of 1-15 characters without "
                 "whitespace, '/' or ':'")
_PORT = f.integer(1, 65535)
_TABLE = f.integer(1, 2**32 - 1)
RESERVED_TABLES = frozenset({253, 254, 255})  # default, main, local
_PERSISTENCE = f.integer(0, 31_536_000)


def load_model(path: str | os.PathLike, allowed_dirs: list[str] | None = None,
               text: str | None = None, spill: Spill | None = None) -> Model:
    """Read and validate the model at ``path``; CIDR files are relative to it and must
    lie inside its directory, one of ``allowed_dirs`` or one of ``$DCNET_MODEL_PATHS``.
    ``text``: the model's text when it was read already (as from ``path``); ``spill``:
    as :func:`parse_model` takes it."""
    path = os.fspath(path)
    if text is None:
        text = read_model_text(path)
    base = os.path.dirname(os.path.abspath(path))
    allowed = inputs.allowed_dirs(base, allowed_dirs)

    def read_text(name: str) -> str:
        return inputs.read_text(inputs.confine(base, name, allowed), inputs.MAX_LIST_BYTES)

    return parse_model(text, source=path, read_text=read_text,
                       files_dir=os.path.dirname(path), spill=spill)


def read_model_text(path: str) -> str:
    """The text of the model file at ``path`` (bounded, UTF-8), or a located ModelError."""
    try:
        return inputs.read_text(path, inputs.MAX_MODEL_BYTES)
    except inputs.InputError as exc:
        what = "cannot read model" if exc.unreadable else "cannot use model"
        raise ModelError([Problem(path, exc.line, "", f"{what}: {exc}")]) from None


def parse_model(text: str, source: str = "<model>", read_text: ReadText | None = None,
                files_dir: str = "", spill: Spill | None = None) -> Model:
    """Validate model ``text``; ``read_text(name)`` reads a CIDR list file, and problems
    in such a file are reported as ``files_dir/name``.

    ``spill``, if given, is called with each service that was read, and whose real
    servers were checked, without a problem as the YAML events built it (in file order;
    not on the composed path, and a pass the composed path took over may have spilled
    some already), and the model returned holds that service without its real servers
    (``real_servers=()``, the same object otherwise): the caller keeps the whole service
    (``elbctl exporter``'s first loader child pickles them, so 100,000 real servers are
    never all held; docs/model.md). Every check is made as without ``spill``: a service
    whose real servers have a problem is read again whole, and the errors are the same."""
    # Parsing builds hundreds of thousands of small acyclic objects at 10,000 services;
    # the cyclic collector's passes over them cost about as much as the parse itself
    # (bench/model_load.py), so it is paused for the duration.
    with paused_gc():
        return _parse_model(text, source, read_text, files_dir, spill)


def _parse_model(text: str, source: str, read_text: ReadText | None, files_dir: str,
                 spill: Spill | None) -> Model:
    shared: dict[str, object] = {}     # _read_service's equal parts, one of each
    try:
        located = load_located(text, source, services=_service_reader(source, shared, spill))
    except YAMLSourceError as exc:
        raise ModelError([Problem(source, exc.line, f.format_path(exc.path),
                                  exc.message)]) from None
    if located.data is None:
        raise ModelError([Problem(source, 1, "", "the model is empty (expected a mapping with "
                                  "'version', 'carriers' and 'services')")])
    problems = f.Problems(located)
    list_lines: dict[str, dict] = {}
    carriers, services, settings = _read_model(located, problems, read_text or _no_files,
                                               files_dir, list_lines, shared)
    check_model(carriers, services, problems, declared_carriers=_declared_carriers(located))
    _check_list_overlaps(carriers, problems, list_lines, files_dir)
    for name, section in SECTIONS.items():
        if settings.get(name) is not None:
            section.check(settings[name], carriers, services, problems)
    problems.raise_if_any()
    return Model(source=source, carriers=tuple(c for _, c in carriers),
                 services=tuple(s for _, s in services), **settings)


def _service_reader(source: str, shared: dict,
                    spill: Spill | None) -> Callable[[int, dict], object]:
    """Each raw service as the YAML is read: its :class:`Service` when it reads without
    a problem (so the raw services are never all held: 40 MiB at 10,000 x 10), else the
    raw service, which :func:`_read_model` reads again and words the problems of. With
    ``spill``, a service whose real servers check clean (the one check of them, which
    needs nothing else) goes there, and the reader keeps it without them."""
    def read(index: int, item: dict) -> object:
        path = ("services", index)
        scratch = f.Problems(LocatedData(None, source))    # no lines: none are wanted
        service = _read_service(scratch, path, item, shared)
        if spill is not None and service is not None and not scratch.items:
            check_real_servers(path, service, scratch)
            if not scratch.items:
                spill(service)
                return Service(job=service.job, vips=service.vips, ports=service.ports,
                               health_check=service.health_check,
                               lint_ignore=service.lint_ignore)
        return item if scratch.items or service is None else service
    return read


def _no_files(name: str) -> str:
    raise OSError(f"no file access while parsing from text (wanted {name!r})")


def _declared_carriers(located: LocatedData) -> frozenset[str]:
    """Every carrier name in the file, even of carriers that failed to read."""
    data = located.data if isinstance(located.data, dict) else {}
    items = data.get("carriers") if isinstance(data.get("carriers"), list) else []
    return frozenset(c["name"] for c in items if isinstance(c, dict) and isinstance(
        c.get("name"), str))


def _read_model(located: LocatedData, problems: f.Problems, read_text: ReadText,
                files_dir: str, list_lines: dict[str, dict], shared: dict):
    """The carriers and services that read cleanly, each with its index in the file,
    and the back-end settings sections."""
    top = f.MappingReader(problems, (), located.data, "the model")
    top.required("version", f.integer(MODEL_VERSION, MODEL_VERSION))
    raw_carriers = top.required("carriers", f.raw)
    raw_services = top.optional("services", f.raw, [])
    raw_sections = {name: top.optional(name, f.raw) for name in SECTIONS}
    top.finish()
    settings = {name: section.read(problems, (name,), raw_sections[name])
                for name, section in SECTIONS.items()}
    carriers = []
    for i, item in enumerate(f.list_of(("carriers",), problems, raw_carriers, "carriers")):
        if problems.full:       # a hostile model: no point reading thousands more
            problems.stop(("carriers", i))
            break
        carriers.append(_read_carrier(problems, ("carriers", i), item, read_text, files_dir,
                                      list_lines))
    services = []
    raw_services = f.list_of(("services",), problems, raw_services, "services")
    for i, item in enumerate(raw_services):
        if problems.full:
            problems.stop(("services", i))
            break
        services.append(item if type(item) is Service else  # read as the YAML was
                        _read_service(problems, ("services", i), item, shared))
        if located.unshared:    # nothing else refers to it: its memory goes as it is read
            raw_services[i] = None
    return ([(i, c) for i, c in enumerate(carriers) if c],
            [(i, s) for i, s in enumerate(services) if s], settings)


def _read_carrier(problems: f.Problems, path: Path, data: object, read_text: ReadText,
                  files_dir: str, list_lines: dict[str, dict]) -> Carrier | None:
    r = f.MappingReader(problems, path, data, "a carrier")
    name = r.required("name", _NAME)
    uplink = r.required("uplink", _IFNAME)
    gateway = r.required("gateway", f.ip_address)
    table = r.required("table", _TABLE)
    if table is not f.MISSING and table in RESERVED_TABLES:
        problems.add((*path, "table"), f"table {table} is reserved by the kernel "
                     "(253 default, 254 main, 255 local)")
        r.failed = True
    raw_ranges = r.required("vip_ranges", f.raw)
    cidr_file = r.optional("cidrs", f.text(r".+", "a file name"))
    default = r.optional("default", f.boolean, False)
    down = r.optional("down", f.boolean, False)
    gateway6 = r.optional("gateway6", f.ip_address, None)
    ok = r.finish()
    if ok and gateway6 is not None and (gateway6.version != 6 or gateway.version != 4):
        problems.add((*path, "gateway6"), "gateway6 is the IPv6 next hop of a line whose "
                     "gateway is IPv4 (an IPv6-only line sets gateway alone)")
        ok = False
    ranges = []
    for i, item in enumerate(f.list_of((*path, "vip_ranges"), problems, raw_ranges, "vip_ranges")):
        try:
            ranges.append(f.ip_network(item))
        except ValueError as exc:
            problems.add((*path, "vip_ranges", i), str(exc))
            ok = False
    if raw_ranges is not f.MISSING and not ranges and ok:
        problems.add((*path, "vip_ranges"), "must list at least one network")
        ok = False
    lines: dict = {}
    cidrs = (_read_cidr_file(problems, (*path, "cidrs"), cidr_file, read_text, files_dir,
                             lines) if isinstance(cidr_file, str) else ())
    if not ok or cidrs is None:
        return None
    list_lines[name] = lines
    return Carrier(name=name, uplink=uplink, gateway=gateway, table=table,
                   vip_ranges=tuple(ranges), cidr_file=cidr_file, cidrs=cidrs, default=default,
                   down=down, gateway6=gateway6)


def _read_cidr_file(problems: f.Problems, path: Path, name: str, read_text: ReadText,
                    files_dir: str, lines: dict):
    """A carrier's client prefixes: one CIDR a line, '#' comments and blank lines allowed.
    ``lines`` gets each prefix's line. Problems name the list file and line, never the
    line's text (a list file could be any file the loader can read)."""
    source = os.path.join(files_dir, name)
    try:
        content = read_text(name)
    except inputs.InputError as exc:
        if exc.line is None:
            problems.add(path, f"cannot read CIDR list {name!r}: {exc}")
        else:
            problems.add(path, f"unusable CIDR list: {exc}", source=source, line=exc.line)
        return None
    except UnicodeDecodeError as exc:      # from a caller's read_text
        problems.add(path, f"unusable CIDR list: not UTF-8 at offset {exc.start}",
                     source=source, line=exc.object[:exc.start].count(b"\n") + 1)
        return None
    except OSError as exc:
        problems.add(path, f"cannot read CIDR list {name!r}: {exc.strerror or exc}")
        return None
    nets, ok = [], True
    for lineno, line in enumerate(content.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        net = _fast_v4_network(entry)
        try:
            net = net or f.ip_network(entry)
        except ValueError as exc:
            detail = "host bits set" if "host bits" in str(exc) else "not a CIDR prefix"
            problems.add(path, f"not a valid network ({detail})", source=source, line=lineno)
            ok = False
            continue
        nets.append(net)
        lines.setdefault(net, lineno)
    return tuple(nets) if ok else None


_V4_CIDR = re.compile(r"(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\."
                      r"(0|[1-9]\d{0,2})/(0|[1-9]\d?)")


def _fast_v4_network(entry: str) -> ipaddress.IPv4Network | None:
    """A well-formed IPv4 prefix without host bits, about twice as fast as
    ``ipaddress.ip_network`` (carrier lists run to tens of thousands of lines); None for
    anything else, which then takes the general path and its error messages."""
    m = _V4_CIDR.fullmatch(entry)
    if m is None:
        return None
    a, b, c, d, bits = map(int, m.groups())
    if a > 255 or b > 255 or c > 255 or d > 255 or bits > 32:
        return None
    address = (a << 24) | (b << 16) | (c << 8) | d
    if address & ((1 << (32 - bits)) - 1):
        return None
    return ipaddress.IPv4Network((address, bits))


def _check_list_overlaps(carriers: list[tuple[int, Carrier]], problems: f.Problems,
                         list_lines: dict[str, dict], files_dir: str) -> None:
    """A client prefix in two carriers' lists: DNS views would pick one silently."""
    index = {c.name: i for i, c in carriers}
    for o in overlaps([c for _, c in carriers], limit=f.Problems.MAX_PROBLEMS + 1):
        first = (f"{os.path.join(files_dir, o.first.cidr_file)}:"
                 f"{list_lines[o.first.name].get(o.first_prefix)}")
        problems.add(("carriers", index[o.second.name], "cidrs"),
                     f"client prefix {o.second_prefix} of carrier {o.second.name!r} overlaps "
                     f"{o.first_prefix} of carrier {o.first.name!r} ({first}): the first "
                     "matching DNS view would win silently",
                     source=os.path.join(files_dir, o.second.cidr_file),
                     line=list_lines[o.second.name].get(o.second_prefix))


def _read_service(problems: f.Problems, path: Path, data: object,
                  shared: dict | None = None) -> Service | None:
    """One service, or None after its problems; with ``shared``, its ports and health
    check are the objects of an earlier service that has equal ones (keyed by repr, so
    5 and 5.0 stay apart): at 10,000 x 10, 2 MiB less for the same ports and checks."""
    r = f.MappingReader(problems, path, data, "a service")
    job = r.required("job", JobName.parse)
    raw_vips = r.required("vips", f.raw)
    raw_ports = r.required("ports", f.raw)
    raw_servers = r.optional("real_servers", f.raw, [])
    raw_check = r.optional("health_check", f.raw)
    raw_lint = r.optional("lint", f.raw)
    ok = r.finish()
    lint_ignore = _read_lint(problems, (*path, "lint"), raw_lint)
    vips = _read_vips(problems, (*path, "vips"), raw_vips) if raw_vips is not f.MISSING else None
    port_items = f.list_of((*path, "ports"), problems, raw_ports, "ports")
    if raw_ports is not f.MISSING and isinstance(raw_ports, list) and not raw_ports:
        problems.add((*path, "ports"), "a service needs at least one port")
        ok = False
    ports = [_read_port(problems, (*path, "ports", i), p) for i, p in enumerate(port_items)]
    servers = [
        _read_real_server(problems, (*path, "real_servers", i), s)
        for i, s in enumerate(f.list_of((*path, "real_servers"), problems, raw_servers,
                                        "real_servers"))
    ]
    check = HealthCheck() if raw_check is None else _read_health_check(
        problems, (*path, "health_check"), raw_check)
    parts = [vips, check, lint_ignore, *ports, *servers]
    if not ok or any(p is None for p in parts) or job is f.MISSING:
        return None
    ports = tuple(ports)
    if shared is not None:
        ports = shared.setdefault(repr(ports), ports)
        check = shared.setdefault(repr(check), check)
    return Service(job=job, vips=vips, ports=ports, real_servers=tuple(servers),
                   health_check=check, lint_ignore=lint_ignore)


_LINT_ID = f.text(r"ELB\d{3}", "an elbctl lint rule id such as ELB001")


def _read_lint(problems: f.Problems, path: Path, data: object) -> tuple[str, ...] | None:
    """``lint: {ignore: [ELB001, ...]}``: the lint rules silenced for one service."""
    if data is None:
        return ()
    r = f.MappingReader(problems, path, data, "lint")
    raw = r.optional("ignore", f.raw, [])
    ok = r.finish()
    ids = []
    for i, item in enumerate(f.list_of((*path, "ignore"), problems, raw, "ignore")):
        try:
            ids.append(_LINT_ID(item))
        except ValueError as exc:
            problems.add((*path, "ignore", i), str(exc))
            ok = False
    return tuple(ids) if ok else None


def _read_vips(problems: f.Problems, path: Path, data: object):
    if not isinstance(data, dict) or not data:
        problems.add(path, "vips must map carrier names to addresses, e.g. {telecom: 192.0.2.10}")
        return None
    vips, ok = [], True
    for carrier, value in data.items():
        # an address, or a list of at most one IPv4 and one IPv6 address (dual stack)
        values = value if isinstance(value, list) else [value]
        if not 1 <= len(values) <= 2:
            problems.add((*path, carrier), "a VIP or a list of one IPv4 and one IPv6 VIP, "
                         f"not {len(values)} items")
            ok = False
            continue
        try:
            addresses = [f.ip_address(v) for v in values]
        except ValueError as exc:
            problems.add((*path, carrier), str(exc))
            ok = False
            continue
        if len({a.version for a in addresses}) != len(addresses):
            problems.add((*path, carrier), "at most one IPv4 and one IPv6 VIP per carrier")
            ok = False
        vips.extend((carrier, a) for a in addresses)
    return tuple(vips) if ok else None


def _read_port(problems: f.Problems, path: Path, data: object) -> Port | None:
    r = f.MappingReader(problems, path, data, "a port")
    values = {
        "port": r.required("port", _PORT),
        "protocol": r.optional("protocol", f.choice(Protocol), Protocol.TCP),
        "scheduler": r.optional("scheduler", f.one_of(SCHEDULERS, "scheduler"), "wlc"),
        "forward": r.optional("forward", f.choice(Forwarding), Forwarding.DR),
        "persistence": r.optional("persistence", _PERSISTENCE, 0),
        "target_port": r.optional("target_port", _PORT),
        "mode": r.optional("mode", f.one_of(PORT_MODES, "mode"), "tcp"),
    }
    if not r.finish():
        return None
    if values["mode"] == "http" and values["protocol"] is not Protocol.TCP:
        problems.add((*path, "mode"), f"mode http needs protocol tcp, not "
                                      f"{values['protocol'].value}")
        return None
    return Port(**values)


def _read_real_server(problems: f.Problems, path: Path, data: object) -> RealServer | None:
    r = f.MappingReader(problems, path, data, "a real server")
    values = {
        "address": r.required("address", f.ip_address),
        "weight": r.optional("weight", f.integer(0, MAX_WEIGHT), 1),
        "port": r.optional("port", _PORT),
    }
    return RealServer(**values) if r.finish() else None


def _read_health_check(problems: f.Problems, path: Path, data: object) -> HealthCheck | None:
    r = f.MappingReader(problems, path, data, "a health check")
    values = {
        "type": r.optional("type", f.choice(CheckType), CheckType.TCP),
        "port": r.optional("port", _PORT),
        "path": r.optional("path", f.text(r"/\S*", "an HTTP path starting with '/'")),
        "expect_status": r.optional("expect_status", f.integer(100, 599), 200),
        "interval": r.optional("interval", f.number(0.1, 3600), 5.0),
        "timeout": r.optional("timeout", f.number(0.1, 3600), 3.0),
        "rise": r.optional("rise", f.integer(1, 100), 2),
        "fall": r.optional("fall", f.integer(1, 100), 3),
    }
    if not r.finish():
        return None
    check = HealthCheck(**values)
    ok = True
    if check.type is CheckType.HTTP and check.path is None:
        problems.add(path, "an http health check needs 'path'")
        ok = False
    if check.type is not CheckType.HTTP and check.path is not None:
        problems.add((*path, "path"), f"'path' only applies to http checks, not {check.type}")
        ok = False
    if check.timeout > check.interval:
        problems.add((*path, "timeout"), f"timeout {check.timeout:g}s is longer than the "
                     f"interval {check.interval:g}s")
        ok = False
    return check if ok else None
