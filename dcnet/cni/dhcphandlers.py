"""The macvlan agent's request handlers: ADD, DEL, CHECK, STATUS, GC and PING.

``RequestHandlers`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``; ``serve`` turns
one protocol request into one answer. ADD creates the macvlan directly in the pod's
namespace under a temporary name, renames it to CNI_IFNAME, sets arp_notify and
promote_secondaries, brings it up, journals a pending record and starts a
``dcnet.cni.dhcprunner.Runner``, answering once the lease is bound (an undo stack removes
what a failed ADD made). DEL (``teardown``) stops the client, which sends DHCPRELEASE
from the leased address over the pod's own link; with no client running it releases the
journaled lease over the pod's link or a temporary macvlan carrying the pod's MAC
(``release_offline``); then it deletes the link and forgets the attachment.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from dcnet.cni import agentproto, ip4, leases
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf, runtime_requests
from dcnet.cni.dhcpclient import JournalLease, client_config, lease_from_record, release_thread
from dcnet.cni.dhcprunner import STOP_TIMEOUT, Runner
from dcnet.cni.errors import (
    CHECK_FAILED,
    DECODE_FAILURE,
    INTERNAL,
    INVALID_CONFIG,
    LINK_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from dcnet.cni.macvlan import delete_pod_link, link_alias
from dcnet.cni.nsref import resolve
from dcnet.cni.podns import (
    IFF_RUNNING,
    IFF_UP,
    RELEASE_PREFIX,
    TEMP_PREFIX,
    netns_identity,
    pod_netlink,
    temp_name,
    write,
)
from dcnet.cni.skel import CmdArgs
from dcnet.cni.version import to_canonical
from dcnet.sysio import netns
from dcnet.undo import Undo


class RequestHandlers:
    """The CNI commands of ``MacvlanAgent`` (state and helpers live on the agent)."""

    def serve(self, message: dict) -> dict:
        """One protocol request -> one answer (never raises)."""
        command = message.get("command")
        handlers = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check,
                    "STATUS": self.status, "GC": self.gc, "PING": self.ping}
        try:
            if command not in handlers or not isinstance(message.get("conf"), dict):
                raise CniError(DECODE_FAILURE, f"bad request: command {command!r}")
            env = message.get("env") or {}
            result = handlers[command](CmdArgs(command, env, message["conf"]))
            return {"proto": agentproto.PROTO, "result": result or {}}
        except CniError as exc:
            return {"proto": agentproto.PROTO, "error": exc.to_json("1.1.0")}
        except Exception as exc:
            self.log(f"{command} failed: {type(exc).__name__}: {exc}")
            return {"proto": agentproto.PROTO, "error": {
                "code": INTERNAL, "msg": f"{type(exc).__name__}: {exc}"}}

    def ping(self, args: CmdArgs) -> dict:
        return {"agent": os.getpid(), "leases": len(self.runners)}

    # ------------------------------------------------------------ ADD

    def add(self, args: CmdArgs) -> dict:
        conf = self._conf(args)
        cni_args = parse_args(args.args)
        requested_ip, requested_mac = runtime_requests(conf, cni_args)
        if requested_ip is not None:
            raise CniError(INVALID_CONFIG, "invalid network config: runtimeConfig.ips: "
                           "in macvlan mode addresses come from DHCP")
        prev = to_canonical(conf.prev_result) if conf.prev_result else None
        key = leases.attachment_key(args.container_id, args.ifname)
        with self._lock(key):
            runner = self.runners.get(key)
            if runner is not None and runner.alive():
                raise CniError(LINK_FAILURE, f"container {args.container_id} already has "
                               f"{args.ifname} on network {conf.name}")
            master = self.master_link(conf)
            if conf.mtu_explicit and conf.mtu > (master["mtu"] or 0):
                raise CniError(INVALID_CONFIG, f"invalid network config: mtu: {conf.mtu} "
                               f"exceeds the MTU {master['mtu']} of master {master['name']}")
            mtu = conf.mtu if conf.mtu_explicit else master["mtu"]
            try:
                pod_fd = os.open(resolve(args.netns), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise CniError(UNKNOWN_CONTAINER,
                               f"network namespace {args.netns} does not exist") from None
            undo = Undo()
            try:
                return self._add(args, conf, cni_args, master, mtu, requested_mac, pod_fd,
                                 undo, prev)
            except BaseException:
                for line in undo.unwind():
                    self.log(f"ADD undo failed: {line}")
                raise
            finally:
                os.close(pod_fd)

    def _add(self, args: CmdArgs, conf: NetConf, cni_args: dict, master: dict, mtu: int,
             requested_mac: str | None, pod_fd: int, undo: Undo, prev: dict | None) -> dict:
        ifname, cid = args.ifname, args.container_id
        alias = link_alias(conf.name, cid, ifname)
        temporary = temp_name(TEMP_PREFIX, cid, ifname)
        pod = pod_netlink(args.netns)
        try:
            if pod.link(ifname) is not None:
                raise CniError(LINK_FAILURE, f"interface {ifname} already exists in "
                               f"{args.netns}")
            with self.node() as nl:
                try:
                    nl.add_macvlan(temporary, master["index"], conf.macvlan_mode, pod_fd, mtu,
                                   requested_mac, alias)
                except OSError as exc:
                    raise CniError(LINK_FAILURE, f"creating a {conf.macvlan_mode} macvlan on "
                                   f"{master['name']} failed", str(exc)) from None
            undo.push(f"delete {temporary}", lambda: pod.delete_link(temporary))
            link = pod.link(temporary)
            if link is None:
                raise CniError(LINK_FAILURE, f"{temporary} vanished from {args.netns}")
            try:
                pod.rename(link["index"], ifname, alias)
            except OSError as exc:
                raise CniError(LINK_FAILURE, f"renaming {temporary} to {ifname} failed",
                               str(exc)) from None
            undo.push(f"delete {ifname}",
                      lambda: delete_pod_link(resolve(args.netns), ifname, alias))
            for key in ("arp_notify", "promote_secondaries"):  # see Runner.on_lease
                netns.call_here_in(resolve(args.netns), write,
                                   f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "1")
            with contextlib.suppress(OSError):  # IPv6 may be disabled in the pod
                netns.call_here_in(resolve(args.netns), write,
                                   f"/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify", "1")
            self.prepare_pod6(conf, args, cni_args)  # SLAAC sysctls before the link is up
            pod.set_up(link["index"])
            link = pod.link(ifname) or link
        finally:
            pod.close()
        pod_namespace = cni_args.get("K8S_POD_NAMESPACE")
        pod_name = cni_args.get("K8S_POD_NAME")
        cid_bytes = leases.client_id(conf.client_id, pod_namespace, pod_name, ifname, cid)
        record = leases.new_record(
            conf.name, cid, ifname, args.netns, netns_identity(args.netns), master["name"],
            conf.macvlan_mode, link["mac"], cid_bytes.hex() if cid_bytes else None,
            leases.hostname_option(pod_name) if conf.send_hostname else None)
        self.journal.write(record)
        undo.push("remove journal record", lambda: self.journal.remove(cid, ifname))
        runner = Runner(self, record)
        key = runner.key
        self.runners[key] = runner
        undo.push("stop the DHCP client", lambda: self._forget(key, release=True))
        runner.start()
        deadline = time.monotonic() + conf.dhcp_timeout
        while not runner.bound.wait(0.05):
            if runner.finished.is_set() or time.monotonic() > deadline:
                why = (f"the DHCP client failed: {runner.error}" if runner.finished.is_set()
                       else f"no DHCP lease within {conf.dhcp_timeout}s")
                raise CniError(TRY_AGAIN_LATER, f"{why} ({ifname} on master {master['name']})",
                               "is a DHCP server answering on that segment?")
        self.wait_pod6(conf, args, record, link["index"], undo)
        return self._result(args, record, mtu, prev)

    def _result(self, args: CmdArgs, record: dict, mtu: int, prev: dict | None) -> dict:
        result = prev or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
        index = len(result["interfaces"])
        result["interfaces"].append({"name": args.ifname, "mac": record["mac"], "mtu": mtu,
                                     "sandbox": args.netns})
        configured = record["configured"]
        ip_entry = {"address": configured["address"], "interface": index}
        if configured.get("gateway"):
            ip_entry["gateway"] = configured["gateway"]
            result["routes"].append({"dst": "0.0.0.0/0", "gw": configured["gateway"]})
        result["ips"].append(ip_entry)
        self.result6(result, record, index)
        if record.get("dns"):
            result["dns"] = dict(result.get("dns") or {}, **record["dns"])
        self.dns6(result, record)
        return result

    def _forget(self, key: str, release: bool) -> None:
        runner = self.runners.pop(key, None)
        if runner is not None:
            runner.stop(release)

    # ------------------------------------------------------------ DEL

    def delete(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        parse_args(args.args)
        key = leases.attachment_key(args.container_id, args.ifname)
        with self._lock(key):
            self.teardown(conf, args.container_id, args.ifname, args.netns)

    def teardown(self, conf: NetConf, cid: str, ifname: str, netns_path: str | None) -> dict:
        """Release the lease (from its address), delete the link, forget the attachment.
        Best effort and repeatable: whatever is already gone is skipped. The release is
        never lost: when the pod's link cannot carry it (gone or down) it goes from the
        host side (``release_offline``); when that cannot be sent either, the journal
        record stays and the release is queued for housekeeping to retry."""
        key = leases.attachment_key(cid, ifname)
        record = None
        with contextlib.suppress(leases.JournalError):
            record = self.journal.read(cid, ifname)
        released6, attempted6 = None, False
        if key in self.runners6:  # DHCPv6 first: RELEASE goes over the pod's link
            attempted6 = record is not None and self._pod_link_usable(record) is not False
            released6 = self._forget6(key, release=attempted6)
        if not attempted6 and record is not None and self.releasable6(record):
            released6 = self.release6_offline(record)
        runner = self.runners.pop(key, None)
        released = None
        if runner is not None and runner.alive():
            usable = self._pod_link_usable(runner.record)
            runner.stop(release=usable is not False)
            if usable is False:
                self.log(f"{key}: {ifname} is gone or down in the pod: releasing from the "
                         "host side")
            elif not runner.finished.is_set() or runner.error is not None:
                self.log(f"{key}: the client could not release ({runner.error}): releasing "
                         "from the host side")
            else:
                released = "client"
        if released is None and record is not None and self._releasable(record):
            released = self.release_offline(record)
            if released is None:
                self.queue.put(cid, ifname, netns_path or record.get("netns") or "")
        path = netns_path or (record or {}).get("netns")
        if path and os.path.exists(resolve(path)):
            with contextlib.suppress(OSError, RuntimeError):
                delete_pod_link(resolve(path), ifname, link_alias(conf.name, cid, ifname))
        if record is not None:
            self.shim_route((record.get("configured") or {}).get("address"), None)
            self.shim_route6((record.get("configured6") or {}).get("address"), None)
            if released is None and self._releasable(record):
                self.log(f"{key}: release of {(record.get('configured') or {}).get('address')}"
                         " queued: retried every housekeeping sweep")
                return {"containerID": cid, "ifname": ifname, "released": None,
                        "queued": True}
        self.journal.remove(cid, ifname)
        self.queue.remove(cid, ifname)
        return {"containerID": cid, "ifname": ifname, "released": released,
                **({"released6": released6} if released6 is not None else {})}

    @staticmethod
    def _pod_link_usable(record: dict) -> bool | None:
        """Whether the pod's link can carry a release (there, up, the pod's MAC); None
        when the pod's namespace cannot be looked into."""
        try:
            with pod_netlink(record["netns"]) as pod:
                link = pod.link(record["ifname"])
        except (OSError, RuntimeError):
            return None
        return (link is not None and bool(link["flags"] & IFF_UP)
                and link["mac"] == record["mac"])

    @staticmethod
    def _releasable(record: dict) -> bool:
        if record["state"] != leases.BOUND or not record.get("lease"):
            return False
        expiry = (leases.record_lease_times(record) or {}).get("expiry")
        return expiry is None or expiry > time.time()

    def release_offline(self, record: dict) -> str | None:
        """Send DHCPRELEASE for a journaled lease with no client running: over the pod's
        link if it is still there, else over a temporary macvlan carrying the pod's MAC
        on the master. Returns how it was sent, None when it could not be."""
        lease = lease_from_record(record)
        lease_type = type("ReleasedLease", (JournalLease,), {"resume_from": lease})
        path = record["netns"]
        if netns_identity(path) == tuple(record.get("netnsID") or ()) and path:
            try:
                with pod_netlink(path) as pod:
                    link = pod.link(record["ifname"])
                if (link is not None and link["mac"] == record["mac"]
                        and link["flags"] & IFF_UP):
                    done = threading.Event()
                    errors: list[BaseException] = []
                    netns.start_thread_in(resolve(path), release_thread,
                                          client_config(record, lease_type), done, errors)
                    done.wait(STOP_TIMEOUT)
                    if not errors:
                        self.log(f"released {lease.ip} over the pod's {record['ifname']}")
                        return "pod link"
            except (OSError, RuntimeError) as exc:
                self.log(f"release over the pod's link failed: {exc}")
        name = temp_name(RELEASE_PREFIX, record["containerID"], record["ifname"])
        try:
            with self.node() as nl:
                master = nl.link(record["master"])
                if master is None:
                    self.log(f"cannot release {lease.ip}: master {record['master']} is gone")
                    return None
                if master["flags"] & (IFF_UP | IFF_RUNNING) != IFF_UP | IFF_RUNNING:
                    # a release sent now would be dropped silently (ENETDOWN)
                    self.log(f"cannot release {lease.ip} now: master {record['master']} "
                             "is down")
                    return None
                nl.delete_link(name)
                mode = "passthru" if record["mode"] == "passthru" else "bridge"
                nl.add_macvlan(name, master["index"], mode, mac=record["mac"])
                temp = nl.link(name)
                assert temp is not None
                nl.set_up(temp["index"])
            done = threading.Event()
            errors = []
            release_thread(client_config(record, lease_type, interface=name), done, errors)
            if errors:
                raise errors[0]
            self.log(f"released {lease.ip} over temporary {name} ({record['mac']})")
            return "temporary link"
        except Exception as exc:
            self.log(f"cannot release {lease.ip}: {type(exc).__name__}: {exc}")
            return None
        finally:
            with self.node() as nl, contextlib.suppress(OSError):
                nl.delete_link(name)

    # ------------------------------------------------------------ CHECK

    def check(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        parse_args(args.args)
        if not conf.prev_result:
            raise CniError(INVALID_CONFIG, "CHECK needs prevResult (the cached ADD result)")
        prev = to_canonical(conf.prev_result)

        def fail(problem: str) -> CniError:
            return CniError(CHECK_FAILED, f"CHECK failed: {problem}")
        ours = [i for i, iface in enumerate(prev["interfaces"])
                if iface.get("name") == args.ifname and iface.get("sandbox") == args.netns]
        if not ours:
            raise fail(f"prevResult has no interface {args.ifname} in {args.netns}")
        iface = prev["interfaces"][ours[-1]]
        ips = [ip for ip in prev["ips"] if ip.get("interface") == ours[-1]]
        if not ips:
            raise fail(f"prevResult has no address on {args.ifname}")
        record = self.journal.read(args.container_id, args.ifname)
        if record is None:
            raise fail(f"no lease journaled for {args.container_id}/{args.ifname}")
        if record["state"] != leases.BOUND:
            raise fail(f"the lease is {record['state']}")
        configured = record.get("configured") or {}
        if configured.get("address") != ips[0]["address"]:
            raise fail(f"the lease is now {configured.get('address')}, prevResult has "
                       f"{ips[0]['address']}")
        runner = self.runners.get(leases.attachment_key(args.container_id, args.ifname))
        if runner is None or not runner.alive():
            raise fail("no DHCP client is keeping the lease")
        if not os.path.exists(resolve(args.netns)):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist")
        address, plen = ip4.parse_cidr(configured["address"])
        with pod_netlink(args.netns) as pod:
            link = pod.link(args.ifname)
            if link is None or link["kind"] != "macvlan":
                raise fail(f"{args.ifname} is not a macvlan in {args.netns}")
            if iface.get("mac") and link["mac"] != iface["mac"].lower():
                raise fail(f"{args.ifname} has MAC {link['mac']}, prevResult says "
                           f"{iface['mac']}")
            if not link["flags"] & IFF_UP:
                raise fail(f"{args.ifname} is down")
            if not any(a["index"] == link["index"] and a["address"] == ip4.ip_bytes(address)
                       and a["plen"] == plen for a in pod.addresses()):
                raise fail(f"{args.ifname} lacks {configured['address']}")
            gateway = configured.get("gateway")
            if gateway and not any(
                    r["plen"] == 0 and r["gateway"] == ip4.ip_bytes(ip4.parse_ip(gateway))
                    and r["oif"] == link["index"] for r in pod.routes()):
                raise fail(f"no default route via {gateway} on {args.ifname}")
            self.check6(args, record, ips, pod, link)

    # ------------------------------------------------------------ STATUS and GC

    def status(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        try:
            master = self.master_link(conf)
        except CniError as exc:
            raise CniError(NOT_AVAILABLE, f"dcnet cannot serve ADD: {exc.msg}") from None
        if not master["flags"] & IFF_UP:
            raise CniError(NOT_AVAILABLE, f"dcnet cannot serve ADD: master {master['name']} "
                           f"is down")

    def gc(self, args: CmdArgs) -> dict:
        conf = self._conf(args)
        if conf.valid_attachments is None:
            raise CniError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments")
        valid = {leases.attachment_key(c, i) for c, i in conf.valid_attachments
                 if "+" not in c}
        records, problems = self.journal.records()
        freed, errors = [], list(problems)
        for record in records:
            key = leases.attachment_key(record["containerID"], record["ifname"])
            if key in valid or record["network"] != conf.name:
                continue
            with self._lock(key):
                try:
                    freed.append(self.teardown(conf, record["containerID"], record["ifname"],
                                               record["netns"]))
                except Exception as exc:
                    errors.append(f"{key}: {type(exc).__name__}: {exc}")
        return {"gc": conf.name, "released": freed, "errors": errors}
