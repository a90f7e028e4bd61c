"""The dcnet network configuration: parsing and validating what arrives on stdin.

It owns ``load_conf`` (a single plugin config, or a whole conflist from which the
``dcnet`` entry is taken with the list's name and cniVersion, as libcni would inject
them), the ``NetConf`` it returns and ``runtime_requests`` (the ``ips``/``mac``
capabilities from runtimeConfig and the ``IP``/``MAC`` CNI_ARGS). Every problem is a
CniError naming the field: code 7 for a bad value, 6 for a bad JSON shape.
No I/O, no heavy imports: this is on the ADD path.
"""

from __future__ import annotations

from dcnet.cni import ip4, ip6
from dcnet.cni.errors import DECODE_FAILURE, INVALID_CONFIG, CniError

PLUGIN_TYPE = "dcnet"
MODES = ("host-gw", "macvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
CLIENT_IDS = ("pod", "mac")
DEFAULTS = {
    "mode": "host-gw",
    "bridge": "dcnet0",
    "mtu": 1500,
    "subnetLen": 24,
    "subnetLenV6": 64,
    "dataDir": "/var/lib/cni/networks",
    "runDir": "/run/dcnet",
    "routeProtocol": 217,
    "macvlanMode": "bridge",
    "stateDir": "/var/lib/dcnet/dhcp",
    "dhcpTimeout": 30,
}
IFNAME_MAX = 15


class NetConf:
    """One validated dcnet plugin config (host-gw or macvlan)."""

    __slots__ = ("agent_socket", "bridge", "client_id", "cluster_cidr", "cluster_cidr6",
                 "cni_version",
                 "data_dir", "dhcp_timeout", "host_shim", "macvlan_mode", "master", "mode",
                 "mtu", "mtu_explicit", "name", "prev_result", "raw", "route_protocol",
                 "run_dir", "runtime_config", "send_hostname", "state_dir", "store",
                 "subnet_len", "subnet_len6", "valid_attachments")

    def __init__(self, raw: dict):
        self.raw = raw
        self.cni_version: str = raw.get("cniVersion") or "0.1.0"
        self.name: str = raw.get("name", "")
        self.mode: str = DEFAULTS["mode"]
        self.bridge: str = DEFAULTS["bridge"]
        self.mtu: int = DEFAULTS["mtu"]
        self.subnet_len: int = DEFAULTS["subnetLen"]
        self.cluster_cidr: tuple[int, int] | None = None  # IPv4 (address int, plen)
        self.subnet_len6: int = DEFAULTS["subnetLenV6"]
        self.cluster_cidr6: tuple[int, int] | None = None  # IPv6 (address int, plen)
        self.data_dir: str = DEFAULTS["dataDir"]
        self.run_dir: str = DEFAULTS["runDir"]
        self.route_protocol: int = DEFAULTS["routeProtocol"]
        self.store: dict = {"type": "file", "path": "/var/lib/dcnet/store"}
        self.prev_result: dict | None = None
        self.runtime_config: dict = {}
        self.valid_attachments: list[tuple[str, str]] | None = None
        # macvlan mode (see ``_load_macvlan``)
        self.mtu_explicit = False
        self.master: str | None = None
        self.macvlan_mode: str = DEFAULTS["macvlanMode"]
        self.host_shim: dict | None = None
        self.agent_socket: str = ""
        self.state_dir: str = DEFAULTS["stateDir"]
        self.client_id: str = "mac"
        self.send_hostname = True
        self.dhcp_timeout: int = DEFAULTS["dhcpTimeout"]

    @property
    def ipam_dir(self) -> str:
        """host-local style reservation directory of this network."""
        return f"{self.data_dir.rstrip('/')}/{self.name}"

    @property
    def socket_path(self) -> str:
        """The macvlan agent's unix socket (``agentSocket`` or ``<runDir>/<name>/agent.sock``)."""
        return self.agent_socket or f"{self.run_dir.rstrip('/')}/{self.name}/agent.sock"

    @property
    def lease_dir(self) -> str:
        """Where the macvlan agent journals this network's DHCP leases."""
        return f"{self.state_dir.rstrip('/')}/{self.name}"

    @property
    def node_file(self) -> str:
        """Where the agent publishes this node's subnet for the plugin."""
        return f"{self.run_dir.rstrip('/')}/{self.name}/node.json"


def _bad(field: str, problem: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network config: {field}: {problem}")


def pick_plugin(conf: dict) -> dict:
    """A conflist's dcnet entry (with name and cniVersion injected); a plain config as is."""
    if "plugins" not in conf:
        return conf
    plugins = conf["plugins"]
    if not isinstance(plugins, list):
        raise CniError(DECODE_FAILURE, "conflist: plugins must be a list")
    for index, entry in enumerate(plugins):
        if isinstance(entry, dict) and entry.get("type") == PLUGIN_TYPE:
            picked = dict(entry)
            picked.setdefault("name", conf.get("name", ""))
            if "cniVersion" in conf:
                picked["cniVersion"] = conf["cniVersion"]
            picked.setdefault("_conflistIndex", index)
            return picked
    raise _bad("plugins", f"no entry of type {PLUGIN_TYPE!r}")


def load_conf(raw: dict) -> NetConf:
    """Validate one dcnet config; raises CniError naming the first bad field."""
    conf = NetConf(raw)
    ptype = raw.get("type", PLUGIN_TYPE)
    if ptype != PLUGIN_TYPE:
        raise _bad("type", f"{ptype!r} is not {PLUGIN_TYPE!r}")
    conf.mode = _string(raw, "mode", DEFAULTS["mode"])
    if conf.mode not in MODES:
        raise _bad("mode", f"unknown mode {conf.mode!r} (this build supports {list(MODES)})")
    conf.bridge = _string(raw, "bridge", DEFAULTS["bridge"])
    if len(conf.bridge) > IFNAME_MAX or "/" in conf.bridge or " " in conf.bridge:
        raise _bad("bridge", f"invalid interface name {conf.bridge!r}")
    conf.mtu = _integer(raw, "mtu", DEFAULTS["mtu"], 68, 65535)
    conf.mtu_explicit = "mtu" in raw
    conf.route_protocol = _integer(raw, "routeProtocol", DEFAULTS["routeProtocol"], 5, 255)
    conf.data_dir = _path(raw, "dataDir", DEFAULTS["dataDir"])
    conf.run_dir = _path(raw, "runDir", DEFAULTS["runDir"])
    if "clusterCIDR" in raw or "subnetLen" in raw or "subnetLenV6" in raw:
        _load_cluster(conf, raw)
    store = raw.get("store", conf.store)
    if not isinstance(store, dict) or not isinstance(store.get("type", "file"), str):
        raise _bad("store", "expected an object like {\"type\": \"file\", \"path\": ...}")
    conf.store = store
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(DECODE_FAILURE, "prevResult must be a JSON object")
    conf.prev_result = prev
    runtime = raw.get("runtimeConfig", {})
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", "expected an object")
    conf.runtime_config = runtime
    if "cni.dev/valid-attachments" in raw:
        conf.valid_attachments = _attachments(raw["cni.dev/valid-attachments"])
    if conf.mode == "macvlan":
        _load_macvlan(conf, raw)
    return conf


def _load_cluster(conf: NetConf, raw: dict) -> None:
    """``clusterCIDR``: one IPv4 and/or one IPv6 range, as a string, a comma-separated
    string (kube-controller-manager's ``--cluster-cidr``) or a list; ``subnetLen`` and
    ``subnetLenV6`` (``--node-cidr-mask-size-ipv4/-ipv6``) size each node's subnet."""
    ranges = raw.get("clusterCIDR", [])
    if isinstance(ranges, str):
        ranges = [part.strip() for part in ranges.split(",")]
    if not isinstance(ranges, list) or not all(isinstance(r, str) for r in ranges):
        raise _bad("clusterCIDR", "expected a CIDR, \"v4,v6\" or a list of one IPv4 and/or "
                                  f"one IPv6 CIDR, got {raw.get('clusterCIDR')!r}")
    if "clusterCIDR" in raw and not ranges:
        raise _bad("clusterCIDR", "expected at least one CIDR")
    for index, text in enumerate(ranges):
        field = "clusterCIDR" if len(ranges) == 1 else f"clusterCIDR[{index}]"
        family = ip6.family_of(text)
        try:
            parsed = family.parse_cidr(text, strict=True)
        except ValueError as exc:
            raise _bad(field, str(exc)) from None
        slot = "cluster_cidr6" if family is ip6 else "cluster_cidr"
        if getattr(conf, slot) is not None:
            name = "IPv6" if family is ip6 else "IPv4"
            raise _bad(field, f"a second {name} range {text!r}: give at most one IPv4 and "
                              "one IPv6 range")
        setattr(conf, slot, parsed)
    v4_only_hint = "" if conf.cluster_cidr is not None or conf.cluster_cidr6 is None else (
        " (subnetLen sizes IPv4 node subnets; IPv6 ones take subnetLenV6)")
    conf.subnet_len = _integer(raw, "subnetLen", DEFAULTS["subnetLen"], 8, 30,
                               hint=v4_only_hint)
    conf.subnet_len6 = _integer(raw, "subnetLenV6", DEFAULTS["subnetLenV6"], 8, 126)
    for slot, field, length in (("cluster_cidr", "subnetLen", conf.subnet_len),
                                ("cluster_cidr6", "subnetLenV6", conf.subnet_len6)):
        cidr = getattr(conf, slot)
        if cidr is not None and cidr[1] > length:
            raise _bad(field, f"{length} is shorter than the cluster CIDR's /{cidr[1]}")


def _load_macvlan(conf: NetConf, raw: dict) -> None:
    """The macvlan/DHCP fields: master, macvlanMode, hostShim, agentSocket, stateDir, dhcp."""
    if "master" in raw:
        conf.master = _ifname(raw, "master")
    conf.macvlan_mode = _string(raw, "macvlanMode", DEFAULTS["macvlanMode"])
    if conf.macvlan_mode not in MACVLAN_MODES:
        raise _bad("macvlanMode", f"unknown macvlan mode {conf.macvlan_mode!r} "
                                  f"(one of {list(MACVLAN_MODES)})")
    if "agentSocket" in raw:
        conf.agent_socket = _path(raw, "agentSocket", "")
    conf.state_dir = _path(raw, "stateDir", DEFAULTS["stateDir"])
    shim = raw.get("hostShim")
    if shim is not None and shim is not False:
        if shim is True:
            shim = {}
        if not isinstance(shim, dict):
            raise _bad("hostShim", "expected true or {\"name\": ..., \"address\": ...}")
        name = _ifname(shim, "name", "hostShim.name") if "name" in shim else "dcnshim0"
        address = shim.get("address")
        if address is not None:
            try:
                ip4.parse_cidr(address)
            except ValueError as exc:
                raise _bad("hostShim.address", str(exc)) from None
        conf.host_shim = {"name": name, "address": address}
    dhcp = raw.get("dhcp", {})
    if not isinstance(dhcp, dict):
        raise _bad("dhcp", "expected an object")
    conf.client_id = dhcp.get("clientID", "mac")
    if conf.client_id not in CLIENT_IDS:
        raise _bad("dhcp.clientID", f"{conf.client_id!r} is not one of {list(CLIENT_IDS)}")
    hostname = dhcp.get("hostname", True)
    if not isinstance(hostname, bool):
        raise _bad("dhcp.hostname", f"expected true or false, got {hostname!r}")
    conf.send_hostname = hostname
    conf.dhcp_timeout = _integer(dhcp, "timeout", DEFAULTS["dhcpTimeout"], 1, 3600, "dhcp.timeout")


def _ifname(raw: dict, key: str, field: str | None = None) -> str:
    value = raw.get(key)
    field = field or key
    if (not isinstance(value, str) or not value or len(value) > IFNAME_MAX
            or value in (".", "..") or any(c in "/:" or c.isspace() for c in value)):
        raise _bad(field, f"invalid interface name {value!r}")
    return value


def requested_ips(conf: NetConf, cni_args: dict[str, str]) -> tuple[dict[int, int], str | None]:
    """({4: IPv4 int, 6: IPv6 int} requested, MAC or None) from runtimeConfig/CNI_ARGS:
    at most one address per family (``ips`` capability, else CNI_ARGS ``IP``, which may
    be ``v4,v6`` as in Kubernetes' dual-stack annotations)."""
    requested: dict[int, int] = {}
    ips = conf.runtime_config.get("ips")
    field = "runtimeConfig.ips"
    if ips is not None and (not isinstance(ips, list)
                            or not all(isinstance(i, str) for i in ips)):
        raise _bad(field, "expected a list of addresses")
    if not ips and cni_args.get("IP"):
        ips, field = cni_args["IP"].split(","), "CNI_ARGS IP"
    for index, text in enumerate(ips or []):
        family, value = _address(text, f"{field}[{index}]")
        if family in requested:
            raise _bad(field, f"host-gw gives one IPv{family} address per interface "
                              "(one IPv4 and one IPv6 at most)")
        requested[family] = value
    mac = conf.runtime_config.get("mac") or cni_args.get("MAC") or None
    if mac is not None and not _is_mac(mac):
        raise _bad("runtimeConfig.mac", f"invalid MAC address {mac!r}")
    return requested, mac


def runtime_requests(conf: NetConf, cni_args: dict[str, str]) -> tuple[int | None, str | None]:
    """(requested IPv4 as int or None, requested MAC or None), for IPv4-only callers."""
    requested, mac = requested_ips(conf, cni_args)
    if 6 in requested:
        raise _bad("runtimeConfig.ips", "IPv6 is not supported here (an IPv6 address was "
                                        f"requested in {conf.mode} mode)")
    return requested.get(4), mac


def _address(text: object, field: str) -> tuple[int, int]:
    """(family 4 or 6, address int) of an address, a '/len' suffix ignored."""
    text = str(text).strip().split("/", 1)[0]
    family = ip6.family_of(text)
    try:
        return (6 if family is ip6 else 4), family.parse_ip(text)
    except ValueError as exc:
        raise _bad(field, str(exc)) from None


def _is_mac(text: object) -> bool:
    if not isinstance(text, str):
        return False
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return False
    try:
        octets = [int(p, 16) for p in parts]
    except ValueError:
        return False
    return not octets[0] & 1  # unicast only


def _string(raw: dict, key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise _bad(key, f"expected a non-empty string, got {value!r}")
    return value


def _path(raw: dict, key: str, default: str) -> str:
    value = _string(raw, key, default)
    if not value.startswith("/"):
        raise _bad(key, f"expected an absolute path, got {value!r}")
    return value


def _integer(raw: dict, key: str, default: int, low: int, high: int,
             field: str | None = None, hint: str = "") -> int:
    value = raw.get(key, default)
    field = field or key
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise _bad(field, f"{value} out of range {low}..{high}{hint}")
    return value


def _attachments(value: object) -> list[tuple[str, str]]:
    field = "cni.dev/valid-attachments"
    if not isinstance(value, list):
        raise _bad(field, "expected a list of {containerID, ifname}")
    out = []
    for index, item in enumerate(value):
        if (not isinstance(item, dict) or not isinstance(item.get("containerID"), str)
                or not isinstance(item.get("ifname"), str)):
            raise _bad(f"{field}[{index}]", "expected {\"containerID\": ..., \"ifname\": ...}")
        out.append((item["containerID"], item["ifname"]))
    return out
