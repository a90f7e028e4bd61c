"""DHCP lease bookkeeping for macvlan mode: pure rules plus the on-disk journal.

It owns the pure parts the agent's DHCP loop is built on (RFC 2131 T1/T2 computation,
the stable client identifier derived from the pod's namespace/name, the hostname option,
reducing a server's ACK to the JSON-safe subset worth keeping, the address/route diff
between what a pod has and what a lease says) and the two on-disk structures:

- ``Journal``: one JSON record per attachment (``<lease dir>/leases/<cid>+<ifname>.json``),
  written atomically (temporary file, fsync, rename, fsync of the directory), so an agent
  killed at any instant leaves either the old or the new record, never half of one;
- ``ReleaseQueue``: ``<lease dir>/release/<cid>+<ifname>.json`` files the plugin drops when
  DEL finds the agent down; the agent sends those releases when it is back.

The plugin's DEL fallback imports this module, so it stays light (cjson, os; hashlib only
where a client id must be hashed).
"""

from __future__ import annotations

import os
import time

from dcnet.cni import cjson
from dcnet.sysio.files import atomic_write

RECORD_VERSION = 1
INFINITE = 0xFFFFFFFF
CLIENT_ID_PREFIX = b"dcnet:"
CLIENT_ID_MAX = 128
# states of a journal record
PENDING, BOUND, EXPIRED = "pending", "bound", "expired"
STATES = (PENDING, BOUND, EXPIRED)
# ACK options worth keeping (pyroute2's decoded option names)
KEPT_OPTIONS = ("subnet_mask", "router", "name_server", "domain_name", "domain_search",
                "lease_time", "renewal_time", "rebinding_time", "server_id",
                "broadcast_address", "interface_mtu", "message_type")


class JournalError(ValueError):
    """A journal or queue file that cannot be used (names the file and the problem)."""


# ---------------------------------------------------------------- pure rules


def lease_timers(lease_time: int | None, t1: int | None = None,
                 t2: int | None = None) -> tuple[float | None, float | None]:
    """(T1, T2) in seconds after the lease was obtained, per RFC 2131 section 4.4.5.

    Defaults T1 = 0.5 and T2 = 0.875 of the lease time; server-sent values are used when
    they are consistent (0 < T1 < T2 < lease) and replaced by the defaults otherwise (a T2
    at or past expiry, a T1 at or past T2). An infinite lease has no timers.
    """
    if lease_time is None or lease_time == INFINITE or lease_time <= 0:
        return None, None
    lease = float(lease_time)
    rebind = float(t2) if t2 is not None and 0 < t2 < lease else lease * 0.875
    renew = float(t1) if t1 is not None and 0 < t1 < rebind else lease * 0.5
    if renew >= rebind:
        renew = rebind * 0.5
    return renew, rebind


def attachment_key(container_id: str, ifname: str) -> str:
    """The file-name key of an attachment: container ids cannot contain '+', so the key
    is unambiguous (skel validated both; ifnames never contain '/')."""
    if "+" in container_id or "/" in container_id or "/" in ifname or not ifname:
        raise JournalError(f"invalid attachment {container_id!r}/{ifname!r}")
    return f"{container_id}+{ifname}"


def client_id(kind: str, pod_namespace: str | None, pod_name: str | None, ifname: str,
              container_id: str) -> bytes | None:
    """The DHCP client identifier (option 61 payload after the type byte) or None.

    ``mac``: None (the client sends type 1 + its MAC, as most clients do). ``pod``:
    ``dcnet:<namespace>/<name>/<ifname>``, the same for every incarnation of the pod, so
    a restarted pod gets its address back; without K8S_POD_NAMESPACE/NAME it falls back
    to the container id. Longer than 128 bytes: the prefix plus a SHA-256 of the rest.
    """
    if kind == "mac":
        return None
    if kind != "pod":
        raise ValueError(f"unknown client id kind {kind!r}")
    if pod_namespace and pod_name:
        identity = f"{pod_namespace}/{pod_name}/{ifname}"
    else:
        identity = f"container/{container_id}/{ifname}"
    value = CLIENT_ID_PREFIX + identity.encode()
    if len(value) > CLIENT_ID_MAX:
        import hashlib

        value = CLIENT_ID_PREFIX + hashlib.sha256(identity.encode()).hexdigest().encode()
    return value


def hostname_option(pod_name: str | None) -> str | None:
    """The hostname option for a pod: its name as one DNS label (lower case, [a-z0-9-],
    at most 63 characters), or None (then no hostname is sent: never the node's)."""
    if not pod_name:
        return None
    label = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-"
                    for c in pod_name.lower())
    label = label.strip("-")[:63].strip("-")
    return label or None


def _json_safe(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum -> int
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


def sanitize_ack(ack: dict) -> dict:
    """The JSON-safe subset of a decoded DHCPACK the agent needs to keep a lease."""
    options = ack.get("options") or {}
    return {"yiaddr": str(ack.get("yiaddr")),
            "options": {k: _json_safe(options[k]) for k in KEPT_OPTIONS if k in options}}


def lease_view(ack: dict) -> dict:
    """What a lease means for the pod: address (cidr), gateway, dns, timers."""
    from dcnet.cni import ip4

    options = ack.get("options", {})
    mask = options.get("subnet_mask")
    plen = bin(ip4.parse_ip(mask)).count("1") if mask else 32
    routers = options.get("router") or []
    view = {"address": f"{ack['yiaddr']}/{plen}", "gateway": routers[0] if routers else None,
            "dns": {}}
    if options.get("name_server"):
        view["dns"]["nameservers"] = list(options["name_server"])
    if options.get("domain_name"):
        view["dns"]["domain"] = options["domain_name"]
    if options.get("domain_search"):
        view["dns"]["search"] = list(options["domain_search"])
    return view


def plan_pod_config(current: dict | None, desired: dict) -> list[tuple[str, str]]:
    """Ordered steps taking a pod from ``current`` to ``desired`` ({address, gateway}).

    A new address is added before the old one is removed and the default route is set
    in between, so a changed lease moves the pod to its new address without a moment
    with no address at all. Steps: ("add-address", cidr), ("set-gateway", ip),
    ("del-gateway", ""), ("del-address", cidr). Nothing to do: [].
    """
    current = current or {}
    steps: list[tuple[str, str]] = []
    old_address, new_address = current.get("address"), desired["address"]
    if old_address != new_address:
        steps.append(("add-address", new_address))
    if desired.get("gateway"):
        if desired["gateway"] != current.get("gateway") or old_address != new_address:
            steps.append(("set-gateway", desired["gateway"]))
    elif current.get("gateway"):
        steps.append(("del-gateway", ""))
    if old_address and old_address != new_address:
        steps.append(("del-address", old_address))
    return steps


# ---------------------------------------------------------------- records


def new_record(network: str, container_id: str, ifname: str, netns: str,
               netns_id: tuple[int, int] | None, master: str, mode: str, mac: str,
               client_id_hex: str | None, hostname: str | None) -> dict:
    """A pending record (no lease yet) for one attachment."""
    return {"version": RECORD_VERSION, "network": network, "containerID": container_id,
            "ifname": ifname, "netns": netns, "netnsID": list(netns_id) if netns_id else None,
            "master": master, "mode": mode, "mac": mac, "clientID": client_id_hex,
            "hostname": hostname, "state": PENDING, "lease": None, "configured": None,
            "configured6": None, "lease6": None, "duid6": None, "updated": time.time()}


_REQUIRED = {"version": int, "network": str, "containerID": str, "ifname": str,
             "netns": str, "master": str, "mode": str, "mac": str, "state": str}


def encode_record(record: dict) -> bytes:
    return (cjson.dumps(record) + "\n").encode()


def decode_record(data: bytes, where: str = "record") -> dict:
    """Parse and validate one journal record; JournalError naming ``where`` and the field."""
    try:
        record = cjson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JournalError(f"{where}: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise JournalError(f"{where}: not a JSON object")
    for key, kind in _REQUIRED.items():
        if not isinstance(record.get(key), kind):
            raise JournalError(f"{where}: field {key}: expected {kind.__name__}")
    if record["version"] != RECORD_VERSION:
        raise JournalError(f"{where}: version {record['version']} is not {RECORD_VERSION}")
    if record["state"] not in STATES:
        raise JournalError(f"{where}: field state: {record['state']!r} not in {STATES}")
    lease = record.get("lease")
    if record["state"] != PENDING and (
            not isinstance(lease, dict) or not isinstance(lease.get("ack"), dict)
            or not isinstance(lease.get("obtained"), (int, float))
            or not isinstance(lease.get("server_mac"), str)):
        raise JournalError(f"{where}: field lease: expected ack, server_mac, obtained")
    return record


def record_lease_times(record: dict) -> dict | None:
    """Absolute epoch times {obtained, t1, t2, expiry} of a record's lease (None: no lease;
    a value None: infinite)."""
    lease = record.get("lease")
    if not lease:
        return None
    options = lease["ack"].get("options", {})
    obtained = float(lease["obtained"])
    lease_time = options.get("lease_time")
    t1, t2 = lease_timers(lease_time, options.get("renewal_time"),
                          options.get("rebinding_time"))
    infinite = lease_time is None or lease_time == INFINITE
    return {"obtained": obtained, "t1": None if t1 is None else obtained + t1,
            "t2": None if t2 is None else obtained + t2,
            "expiry": None if infinite else obtained + float(lease_time)}


# ---------------------------------------------------------------- files


class _Dir:
    suffix = ".json"

    def __init__(self, directory: str):
        self.directory = directory

    def ensure(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def path(self, container_id: str, ifname: str) -> str:
        return f"{self.directory}/{attachment_key(container_id, ifname)}{self.suffix}"

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(self.suffix))
        except FileNotFoundError:
            return []

    def remove(self, container_id: str, ifname: str) -> bool:
        try:
            os.unlink(self.path(container_id, ifname))
        except FileNotFoundError:
            return False
        return True


class Journal(_Dir):
    """The agent's lease journal: one atomically written record per attachment."""

    def __init__(self, lease_dir: str):
        super().__init__(f"{lease_dir.rstrip('/')}/leases")

    def write(self, record: dict) -> None:
        self.ensure()
        record["updated"] = time.time()
        atomic_write(self.path(record["containerID"], record["ifname"]), encode_record(record),
                     mode=0o600)

    def read(self, container_id: str, ifname: str) -> dict | None:
        path = self.path(container_id, ifname)
        try:
            with open(path, "rb") as handle:
                return decode_record(handle.read(), path)
        except FileNotFoundError:
            return None

    def records(self) -> tuple[list[dict], list[str]]:
        """Every readable record, and a message per file that could not be used."""
        found, problems = [], []
        for name in self.names():
            path = f"{self.directory}/{name}"
            try:
                with open(path, "rb") as handle:
                    found.append(decode_record(handle.read(), path))
            except (OSError, JournalError) as exc:
                problems.append(str(exc))
        return found, problems


class ReleaseQueue(_Dir):
    """Releases the plugin could not hand to the agent (it was down); the agent sends them."""

    def __init__(self, lease_dir: str):
        super().__init__(f"{lease_dir.rstrip('/')}/release")

    def put(self, container_id: str, ifname: str, netns: str) -> str:
        self.ensure()
        path = self.path(container_id, ifname)
        atomic_write(path, (cjson.dumps({"containerID": container_id, "ifname": ifname,
                                         "netns": netns, "queued": time.time()})
                            + "\n").encode(), mode=0o600)
        return path

    def items(self) -> list[dict]:
        out = []
        for name in self.names():
            try:
                with open(f"{self.directory}/{name}", "rb") as handle:
                    item = cjson.loads(handle.read())
            except (OSError, ValueError):
                continue
            if isinstance(item, dict) and isinstance(item.get("containerID"), str) \
                    and isinstance(item.get("ifname"), str):
                out.append(item)
        return out
