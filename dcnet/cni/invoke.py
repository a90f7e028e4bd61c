"""A libcni-like runtime for tests, the benchmark and the demo: exec plugins as kubelet does.

``CniRuntime`` takes a conflist (or a single config) and runs its plugins the way
libcni's ``AddNetworkList``/``DelNetworkList``/``CheckNetworkList``/``GetStatusNetworkList``
/``GCNetworkList`` do: each plugin found by its ``type`` in CNI_PATH, exec'd with the CNI
environment and a per-plugin stdin config that has ``name``, ``cniVersion``, the filtered
``runtimeConfig`` and the chained ``prevResult`` injected; the ADD result is cached and
handed to CHECK and DEL; exec retries on ETXTBSY. Plugins run inside ``node_netns`` (a
named namespace) by spawning from a thread already switched into it, so no ``ip netns
exec`` is in the measured path. ``exec_plugin`` also returns the child's peak RSS.

Product code (the chaos army's ``cni-add`` probe invokes the plugin like a runtime),
also used by the labs and tests through :mod:`dcnet.lab.cni_invoke`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import select
import time
from dataclasses import dataclass, field

from dcnet.sysio import netns as netns_mod


class PluginError(RuntimeError):
    """A plugin failed; ``code``/``msg``/``details`` come from its JSON error."""

    def __init__(self, plugin: str, command: str, rc: int, error: dict, stderr: str):
        self.plugin, self.command, self.rc, self.error, self.stderr = (
            plugin, command, rc, error, stderr)
        self.code = error.get("code")
        self.msg = error.get("msg", "")
        super().__init__(f"{plugin} {command} failed (exit {rc}): code {self.code}: "
                         f"{self.msg} {error.get('details', '')} {stderr.strip()}")


@dataclass
class Execution:
    """One plugin exec: exit code, output, wall time, the child's peak RSS (KiB; see
    ``exec_plugin``) and its own CPU time (user + system, from wait4)."""

    rc: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_kib: int
    cpu_seconds: float = 0.0


def exec_plugin(path: str, env: dict[str, str], stdin: str,
                node_netns: str | None = None, retries: int = 5,
                wrapper: list[str] | None = None) -> Execution:
    """Exec ``path`` with ``env`` and ``stdin`` (inside ``node_netns`` if given).

    ``max_rss_kib`` is wait4's ru_maxrss, which Linux inflates with the spawning
    process's own peak; for a clean per-plugin figure run it under a small wrapper
    such as ``/usr/bin/time -f %M -o FILE`` (``wrapper``), as the benchmark does.
    """
    argv = [*(wrapper or []), path]
    if node_netns is None:
        return _exec(argv, env, stdin, retries)
    return netns_mod.run_in(node_netns, _exec, argv, env, stdin, retries)


def _exec(argv: list[str], env: dict[str, str], stdin: str, retries: int) -> Execution:
    for attempt in range(retries + 1):
        try:
            return _spawn(argv, env, stdin)
        except OSError as exc:
            if exc.errno == 26 and attempt < retries:  # ETXTBSY, as libcni retries
                time.sleep(0.05)
                continue
            raise
    raise AssertionError("unreachable")


def _spawn(argv: list[str], env: dict[str, str], stdin: str) -> Execution:
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    read_err, write_err = os.pipe()
    started = time.perf_counter()
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, read_in, 0), (os.POSIX_SPAWN_DUP2, write_out, 1),
            (os.POSIX_SPAWN_DUP2, write_err, 2)])
    except OSError:
        for fd in (read_in, write_in, read_out, write_out, read_err, write_err):
            os.close(fd)
        raise
    for fd in (read_in, write_out, write_err):
        os.close(fd)
    with contextlib.suppress(BrokenPipeError):
        os.write(write_in, stdin.encode())
    os.close(write_in)
    out, err = _read_both(read_out, read_err)
    _, status, rusage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    return Execution(os.waitstatus_to_exitcode(status), out, err, seconds, rusage.ru_maxrss,
                     rusage.ru_utime + rusage.ru_stime)


def _read_both(out_fd: int, err_fd: int) -> tuple[str, str]:
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    open_fds = [out_fd, err_fd]
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [])
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                chunks[fd].append(chunk)
            else:
                open_fds.remove(fd)
                os.close(fd)
    return b"".join(chunks[out_fd]).decode(), b"".join(chunks[err_fd]).decode()


@dataclass
class CniRuntime:
    """Runs a network configuration list like libcni (see module docstring)."""

    conflist: dict
    cni_path: list[str]
    node_netns: str | None = None
    cache: dict[tuple[str, str], dict] = field(default_factory=dict)
    path_env: str = "/usr/sbin:/usr/bin:/sbin:/bin"

    def __post_init__(self) -> None:
        if "plugins" not in self.conflist:  # a single .conf is a list of one
            single = dict(self.conflist)
            self.conflist = {"cniVersion": single.get("cniVersion"),
                             "name": single.get("name"), "plugins": [single]}

    @property
    def version(self) -> str:
        return self.conflist.get("cniVersion") or "0.1.0"

    def find(self, plugin_type: str) -> str:
        for directory in self.cni_path:
            candidate = os.path.join(directory, plugin_type)
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(f"plugin {plugin_type!r} not in {self.cni_path}")

    def plugin_conf(self, plugin: dict, prev: dict | None, runtime: dict | None,
                    extra: dict | None = None) -> dict:
        conf = copy.deepcopy(plugin)
        conf["name"] = self.conflist["name"]
        conf["cniVersion"] = self.version
        capabilities = plugin.get("capabilities") or {}
        wanted = {k: v for k, v in (runtime or {}).items() if capabilities.get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
        if prev is not None:
            conf["prevResult"] = prev
        conf.update(extra or {})
        return conf

    def env(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
            args: str = "") -> dict[str, str]:
        env = {"CNI_COMMAND": command, "CNI_PATH": ":".join(self.cni_path),
               "PATH": self.path_env}
        for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                           ("CNI_IFNAME", ifname), ("CNI_ARGS", args)):
            if value:
                env[key] = value
        return env

    def run(self, plugin: dict, command: str, env: dict[str, str], conf: dict) -> Execution:
        done = exec_plugin(self.find(plugin["type"]), env, json.dumps(conf), self.node_netns)
        if done.rc != 0:
            try:
                error = json.loads(done.stdout)
            except ValueError:
                error = {"code": None, "msg": done.stdout.strip()}
            raise PluginError(plugin["type"], command, done.rc, error, done.stderr)
        return done

    def add(self, container_id: str, netns: str, ifname: str = "eth0", args: str = "",
            runtime: dict | None = None) -> dict:
        prev = None
        env = self.env("ADD", container_id, netns, ifname, args)
        for plugin in self.conflist["plugins"]:
            done = self.run(plugin, "ADD", env, self.plugin_conf(plugin, prev, runtime))
            prev = json.loads(done.stdout)
        assert prev is not None
        self.cache[(container_id, ifname)] = prev
        return prev

    def delete(self, container_id: str, netns: str = "", ifname: str = "eth0",
               args: str = "", runtime: dict | None = None) -> None:
        cached = self.cache.get((container_id, ifname))
        env = self.env("DEL", container_id, netns, ifname, args)
        for plugin in reversed(self.conflist["plugins"]):
            self.run(plugin, "DEL", env, self.plugin_conf(plugin, cached, runtime))
        self.cache.pop((container_id, ifname), None)

    def check(self, container_id: str, netns: str, ifname: str = "eth0",
              args: str = "", runtime: dict | None = None) -> None:
        cached = self.cache[(container_id, ifname)]
        env = self.env("CHECK", container_id, netns, ifname, args)
        for plugin in self.conflist["plugins"]:
            self.run(plugin, "CHECK", env, self.plugin_conf(plugin, cached, runtime))

    def status(self) -> None:
        env = self.env("STATUS")
        for plugin in self.conflist["plugins"]:
            self.run(plugin, "STATUS", env, self.plugin_conf(plugin, None, None))

    def gc(self, valid: list[tuple[str, str]]) -> list[str]:
        """GC every plugin; returns their stderr reports."""
        env = self.env("GC")
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        reports = []
        for plugin in self.conflist["plugins"]:
            done = self.run(plugin, "GC", env, self.plugin_conf(
                plugin, None, None, {"cni.dev/valid-attachments": attachments}))
            reports.append(done.stderr)
        return reports
