"""CNI spec versions: which ones dcnet speaks, comparing them, converting results.

It owns the supported-version list, ``decode_version`` (a config without ``cniVersion``
is 0.1.0, as libcni decodes it), ordering, and the conversion of a result between the
canonical 1.1.0 form used inside dcnet and every supported version: 1.0.0 drops the
1.1.0-only interface and route fields, 0.3.x/0.4.0 also put ``version`` on each IP.
"""

from __future__ import annotations

from dcnet.cni.errors import DECODE_FAILURE, CniError

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
_IFACE_11_ONLY = ("mtu", "socketPath", "pciID")
_ROUTE_11_ONLY = ("mtu", "advmss", "priority", "table", "scope")


def parse(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); CniError(6) for anything else."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(DECODE_FAILURE, f"invalid version {version!r}",
                       "a CNI version looks like 1.1.0")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def decode_version(conf: dict) -> str:
    """The config's cniVersion; missing or empty means 0.1.0 (libcni's rule)."""
    version = conf.get("cniVersion") or "0.1.0"
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, "cniVersion must be a string", repr(version))
    return version


def version_info() -> dict:
    return {"cniVersion": CURRENT, "supportedVersions": list(SUPPORTED)}


def to_canonical(result: dict) -> dict:
    """Any supported result version -> the 1.1.0 form (copies; drops ips[].version)."""
    if not isinstance(result, dict):
        raise CniError(DECODE_FAILURE, "prevResult must be a JSON object", repr(result)[:80])
    out: dict = {"cniVersion": CURRENT}
    out["interfaces"] = [dict(i) for i in _list(result, "interfaces")]
    ips = []
    for ip in _list(result, "ips"):
        ip = dict(ip)
        ip.pop("version", None)
        ips.append(ip)
    out["ips"] = ips
    out["routes"] = [dict(r) for r in _list(result, "routes")]
    dns = result.get("dns") or {}
    out["dns"] = dict(dns) if isinstance(dns, dict) else {}
    return out


def convert(result: dict, version: str) -> dict:
    """A canonical (1.1.0) result rendered in ``version`` (which must be supported)."""
    out: dict = {"cniVersion": version}
    legacy = parse(version) < (1, 0, 0)
    modern_11 = parse(version) >= (1, 1, 0)
    interfaces = []
    for iface in result.get("interfaces", []):
        iface = dict(iface)
        if not modern_11:
            for key in _IFACE_11_ONLY:
                iface.pop(key, None)
        interfaces.append(iface)
    if interfaces:
        out["interfaces"] = interfaces
    ips = []
    for ip in result.get("ips", []):
        ip = dict(ip)
        if legacy:
            ip = {"version": "6" if ":" in ip.get("address", "") else "4", **ip}
        ips.append(ip)
    if ips:
        out["ips"] = ips
    routes = []
    for route in result.get("routes", []):
        route = dict(route)
        if not modern_11:
            for key in _ROUTE_11_ONLY:
                route.pop(key, None)
        routes.append(route)
    if routes:
        out["routes"] = routes
    out["dns"] = dict(result.get("dns") or {})
    return out


def _list(result: dict, key: str) -> list:
    value = result.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CniError(DECODE_FAILURE, f"prevResult.{key} must be a list of objects")
    return value
