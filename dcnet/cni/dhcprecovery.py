"""The macvlan agent's recovery from its lease journal, at start and in housekeeping.

``Recovery`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``. On start (after a clean
stop, a crash or SIGKILL) the agent sends the releases the plugin queued while it was
down, then walks the journal: leases whose namespace is gone are released (over a
temporary macvlan with the pod's MAC) and dropped, pending ones and ones whose link is
gone are dropped, expired ones are set down, and every live one is resumed in BOUND with
its timers re-armed from the journal (a T1 or T2 that passed while the agent was down
renews or rebinds at once). Housekeeping repeats the queue and the gone-namespace sweep
and follows SLAAC addresses that changed (``follow_pods6``).
"""

from __future__ import annotations

import time

from dcnet.cni import ip4, leases
from dcnet.cni.dhcpclient import lease_from_record
from dcnet.cni.dhcprunner import Runner
from dcnet.cni.macvlan import link_alias
from dcnet.cni.podns import is_namespace, netns_identity, pod_netlink


class Recovery:
    """Journal recovery of ``MacvlanAgent`` (see the module docstring)."""

    def process_release_queue(self) -> None:
        for item in self.queue.items():
            cid, ifname = item["containerID"], item["ifname"]
            key = leases.attachment_key(cid, ifname)
            with self._lock(key):
                self.log(f"{key}: sending the release queued while the agent was away")
                self.teardown(self.conf, cid, ifname, item.get("netns"))

    def netns_alive(self, record: dict) -> bool:
        wanted = tuple(record.get("netnsID") or ())
        if not wanted:
            return False
        found = netns_identity(record["netns"])
        # a plain file where the namespace was mounted: this agent's mount namespace does
        # not see the pod's (mounted after the agent started); only DEL or GC end it
        return found == wanted or (found is not None and not is_namespace(found))

    def resume(self) -> None:
        """Pick up every journaled lease (see the module docstring)."""
        records, problems = self.journal.records()
        for problem in problems:
            self.log(f"journal: skipping {problem}")
        for record in records:
            if record["network"] != self.conf.name:
                continue
            key = leases.attachment_key(record["containerID"], record["ifname"])
            with self._lock(key):
                self._resume_one(key, record)
        live = self.journal.records()[0]
        self.sweep_shim_routes(
            {(r.get(k) or {}).get("address", "/").split("/")[0]
             for r in live for k in ("configured", "configured6")})
        for record in live:  # the shim may have been made anew: its routes with it
            if record["state"] == leases.BOUND and record.get("configured"):
                self.shim_route(None, record["configured"]["address"])
            if record["state"] == leases.BOUND and record.get("configured6"):
                self.shim_route6(None, record["configured6"]["address"])

    def _resume_one(self, key: str, record: dict) -> None:
        if key in self.runners:
            return
        if not self.netns_alive(record):
            self.log(f"{key}: namespace {record['netns']} is gone: releasing and dropping")
            self.teardown(self.conf, record["containerID"], record["ifname"], None)
            return
        alias = link_alias(record["network"], record["containerID"], record["ifname"])
        with pod_netlink(record["netns"]) as pod:
            link = pod.link(record["ifname"])
        if record["state"] == leases.PENDING or link is None or link["alias"] != alias:
            why = "was never bound" if record["state"] == leases.PENDING else "lost its link"
            self.log(f"{key}: {why}: dropping")
            self.teardown(self.conf, record["containerID"], record["ifname"],
                          record["netns"] if record["state"] == leases.PENDING else None)
            return
        if record["state"] == leases.EXPIRED:
            return  # kept for CHECK (which fails) and DEL
        expiry = (leases.record_lease_times(record) or {}).get("expiry")
        if expiry is not None and expiry <= time.time():
            self._expire_offline(record, link["index"])
            return
        runner = Runner(self, record, resume=lease_from_record(record))
        self.runners[key] = runner
        runner.start()
        self.resume6(record)
        self.log(f"{key}: resumed {(record.get('configured') or {}).get('address')}")

    def _expire_offline(self, record: dict, index: int) -> None:
        address = (record.get("configured") or {}).get("address")
        with pod_netlink(record["netns"]) as pod:
            pod.set_down(index)
            if address:
                parsed, plen = ip4.parse_cidr(address)
                pod.delete_address(index, ip4.ip_bytes(parsed), plen)
        self.shim_route(address, None)
        record.update(state=leases.EXPIRED, configured=None)
        self.journal.write(record)
        self.log(f"{record['containerID']}+{record['ifname']}: lease of {address} expired "
                 f"while the agent was away: link set down")

    def housekeeping(self) -> None:
        """Send queued releases; release and drop leases whose namespace went away."""
        self.process_release_queue()
        for key, runner in list(self.runners.items()):
            if not self.netns_alive(runner.record):
                with self._lock(key):
                    if self.runners.get(key) is runner:
                        self.log(f"{key}: namespace {runner.record['netns']} is gone: "
                                 "releasing and dropping")
                        self.teardown(self.conf, runner.record["containerID"],
                                      runner.record["ifname"], None)
        self.follow_pods6()

