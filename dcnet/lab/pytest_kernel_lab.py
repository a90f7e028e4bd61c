"""Pytest plugin owning the ``kernel`` marker: run those tests where the kernel has them.

``@pytest.mark.kernel`` / ``@pytest.mark.kernel("ip_vs", "sch_netem")`` names kernel
modules a test needs (default ``("ip_vs",)``).

On the host: if the running kernel can load the modules, the test runs normally.
Otherwise Debian's kernel boots ONCE with virtme-ng (:mod:`dcnet.lab.kernel_lab`) when
the test loop starts, in the background, while the host runs its own tests (those items
are moved to the end of the run, where the host waits for the guest), running this
venv's pytest on exactly the node ids that need it (passed in a file of the shared
directory, read by pytest's ``@FILE`` argument: the guest's command travels on the
kernel command line, which holds about 2 KiB, so node ids must not); the guest
serialises every report (``pytest_report_to_serializable``) into a JSON-lines file in
a directory shared read-write with the host, and the host replays each item's reports
through its own hooks (like pytest-xdist), so those items' fixtures are never set up on
the host.  A test whose reports are missing (guest crash, timeout)
fails with the tail of the guest console log.

Inside the guest (``DCNET_IN_KERNEL_LAB=1``) kernel tests run directly and fail loudly
if a module still cannot be loaded.

Environment:
  ``DCNET_KERNEL_LAB=off``       skip kernel tests the host cannot run (never default);
  ``DCNET_KERNEL_LAB_MEMORY``    guest memory (default ``2G``);
  ``DCNET_KERNEL_LAB_CPUS``      guest vCPUs (default 2);
  ``DCNET_KERNEL_LAB_TIMEOUT``   seconds for the whole guest run (default 3600);
  ``DCNET_KERNEL_LAB_BACKGROUND=0`` boot at the first kernel test instead, in the
                                  collected order, and wait there (no overlap);
  ``DCNET_KERNEL_LAB_KERNEL``    explicit kernel image;
  ``DCNET_KERNEL_LAB_VERBOSE=1`` put kernel messages in the console log too;
  ``DCNET_KERNEL_LAB_KEEP=1``    keep the shared directory (reports, console log).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from dcnet.lab import kernel_lab

ENV_IN_GUEST = "DCNET_IN_KERNEL_LAB"
ENV_REPORTS = "DCNET_KERNEL_LAB_REPORTS"
ENV_SWITCH = "DCNET_KERNEL_LAB"
ENV_MEMORY = "DCNET_KERNEL_LAB_MEMORY"
ENV_CPUS = "DCNET_KERNEL_LAB_CPUS"
ENV_TIMEOUT = kernel_lab.ENV_TIMEOUT
ENV_KEEP = "DCNET_KERNEL_LAB_KEEP"
ENV_BACKGROUND = "DCNET_KERNEL_LAB_BACKGROUND"
DEFAULT_MODULES = (kernel_lab.IPVS_MODULE,)
PLUGIN_NAME = "dcnet.lab.pytest_kernel_lab"

_STATE_KEY = pytest.StashKey["_KernelLab"]()


# ------------------------------------------------------------------ pure helpers


def item_modules(item) -> tuple[str, ...]:
    """Kernel modules an item needs: union of its ``kernel`` markers' args."""
    mods: list[str] = []
    for mark in item.iter_markers("kernel"):
        for m in mark.args or DEFAULT_MODULES:
            if m not in mods:
                mods.append(m)
    return tuple(mods)


def encode_report(nodeid: str, data: dict) -> str:
    """One JSON line carrying a serialised report of ``nodeid``."""
    return json.dumps({"nodeid": nodeid, "report": data}, sort_keys=True)


def encode_finish(nodeid: str) -> str:
    return json.dumps({"nodeid": nodeid, "finished": True}, sort_keys=True)


def decode_reports(lines: Iterable[str]) -> tuple[dict[str, list[dict]], set[str]]:
    """Parse the guest's JSON lines: reports per node id, and node ids that finished.

    A truncated last line (guest died while writing) is ignored.
    """
    reports: dict[str, list[dict]] = {}
    finished: set[str] = set()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        nodeid = rec.get("nodeid")
        if nodeid is None:
            continue
        if rec.get("finished"):
            finished.add(nodeid)
        elif "report" in rec:
            reports.setdefault(nodeid, []).append(rec["report"])
    return reports, finished


def report_from_data(config, data: dict):
    """Rebuild a report from its serialised form, undoing JSON's tuple-to-list change."""
    rep = config.hook.pytest_report_from_serializable(config=config, data=data)
    if rep is None:
        raise ValueError(f"unknown report data: {str(data)[:200]}")
    if isinstance(getattr(rep, "location", None), list):
        rep.location = tuple(rep.location)
    if getattr(rep, "sections", None):
        rep.sections = [tuple(s) for s in rep.sections]
    if rep.skipped and isinstance(rep.longrepr, list):      # (path, line, reason)
        rep.longrepr = tuple(rep.longrepr)
    return rep


def write_nodeids(path: str | os.PathLike, nodeids: Sequence[str]) -> None:
    """The file of pytest arguments the guest reads (``@path``): ``--``, then one node id
    per line (pytest reads such a file one argument per line, so spaces in parametrized
    ids are kept). A node id holding a line break cannot be passed this way."""
    for nodeid in nodeids:
        if "\n" in nodeid or "\r" in nodeid:
            raise ValueError(f"node id with a line break cannot go to the guest: {nodeid!r}")
    Path(path).write_text("".join(f"{line}\n" for line in ("--", *nodeids)), encoding="utf-8")


def guest_pytest_argv(
    python: str,
    nodeids_file: str | os.PathLike,
    *,
    rootdir: str,
    inifile: str | None = None,
    tbstyle: str | None = None,
    showlocals: bool = False,
    noconftest: bool = False,
    plugins: Sequence[str] = (),
) -> list[str]:
    """The pytest command line run inside the guest; the node ids are in ``nodeids_file``
    (:func:`write_nodeids`), so the command's length does not grow with them."""
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", PLUGIN_NAME,
            f"--rootdir={rootdir}"]
    if inifile:
        argv += ["-c", inifile]
    for p in plugins:
        if p not in (PLUGIN_NAME, "no:cacheprovider"):
            argv += ["-p", p]
    if noconftest:
        argv.append("--noconftest")
    if tbstyle and tbstyle != "auto":
        argv.append(f"--tb={tbstyle}")
    if showlocals:
        argv.append("--showlocals")
    argv.append(f"@{nodeids_file}")   # "--" and the node ids, one per line
    return argv


def host_first(items: Sequence, remote: Iterable[str]) -> list:
    """``items`` with those whose node id is in ``remote`` moved to the end, each group
    in its collected order (the host runs its tests while the guest runs the others)."""
    away = set(remote)
    return ([i for i in items if i.nodeid not in away]
            + [i for i in items if i.nodeid in away])


def _plugin_args(args: Sequence[str]) -> list[str]:
    """``-p NAME`` values from the host's command line, to load the same in the guest."""
    out = []
    it = iter(args)
    for a in it:
        if a == "-p":
            nxt = next(it, None)
            if nxt:
                out.append(nxt)
        elif a.startswith("-p") and len(a) > 2:
            out.append(a[2:])
    return out


# ------------------------------------------------------------------------ hooks


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "kernel(*modules): needs kernel modules this host may lack; runs in the kernel lab",
    )
    if os.environ.get(ENV_IN_GUEST) == "1":
        config.pluginmanager.register(_GuestSide(config, os.environ.get(ENV_REPORTS)),
                                      "dcnet-kernel-lab-guest")
    else:
        config.stash[_STATE_KEY] = _KernelLab(config)


class _GuestSide:
    """In the guest: check modules before each kernel test, stream reports to the host."""

    def __init__(self, config, path: str | None):
        self.config = config
        self.fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def _write(self, line: str) -> None:
        if self.fh is None:
            return
        self.fh.write(line + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        mods = item_modules(item)
        if not mods:
            return
        missing = [m for m in mods if not kernel_lab.host_has_modules([m])]
        if missing:
            pytest.fail(
                f"kernel lab guest (linux {os.uname().release}) cannot load kernel "
                f"module(s) {', '.join(missing)}",
                pytrace=False,
            )

    def pytest_runtest_logreport(self, report):
        data = self.config.hook.pytest_report_to_serializable(
            config=self.config, report=report)
        self._write(encode_report(report.nodeid, data))

    def pytest_runtest_logfinish(self, nodeid, location):
        self._write(encode_finish(nodeid))

    def pytest_unconfigure(self, config):
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class _KernelLab:
    """Host side: decides which kernel items go to the guest, boots once, replays."""

    def __init__(self, config):
        self.config = config
        self.remote: dict[str, object] = {}  # nodeid -> item, in run order
        self.host_ok: dict[str, bool] = {}
        self.ran = False
        self.done = False
        self.reports: dict[str, list[dict]] = {}
        self.finished: set[str] = set()
        self.error: str | None = None  # whole-run failure text
        self.run: kernel_lab.GuestRun | None = None
        self.guest: kernel_lab.StartedGuest | None = None
        self.workdir: Path | None = None
        self.background = os.environ.get(ENV_BACKGROUND, "1").strip().lower() not in (
            "0", "off", "no", "false")

    def _host_has(self, mods: Sequence[str]) -> bool:
        for m in mods:
            if m not in self.host_ok:
                self.host_ok[m] = kernel_lab.host_has_modules([m])
        return all(self.host_ok[m] for m in mods)

    # -- selection
    def select(self, items) -> None:
        self.remote.clear()
        off = os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false")
        for item in items:
            if item.get_closest_marker("kernel") is None:
                continue
            mods = item_modules(item)
            if self._host_has(mods):
                continue
            if off:
                item.add_marker(pytest.mark.skip(
                    reason=f"{ENV_SWITCH}=off and host kernel lacks {', '.join(mods)}"))
                continue
            self.remote[item.nodeid] = item

    # -- guest run
    def _terminal(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def start(self) -> None:
        """Boot the guest (in the background) with every remote node id."""
        self.ran = True
        config = self.config
        nodeids = list(self.remote)
        self.workdir = Path(tempfile.mkdtemp(prefix="dcnet-kernel-lab-"))
        self.reports_path = self.workdir / "reports.jsonl"
        self.log_path = self.workdir / "guest-console.log"
        nodeids_path = self.workdir / "nodeids.txt"
        write_nodeids(nodeids_path, nodeids)
        rootdir = str(config.rootpath)
        argv = guest_pytest_argv(
            sys.executable, nodeids_path, rootdir=rootdir,
            inifile=str(config.inipath) if config.inipath else None,
            tbstyle=config.getoption("tbstyle", None),
            showlocals=bool(config.getoption("showlocals", False)),
            noconftest=bool(config.getoption("noconftest", False)),
            plugins=_plugin_args(config.invocation_params.args),
        )
        env = {
            ENV_IN_GUEST: "1",
            ENV_REPORTS: str(self.reports_path),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            # opt-in switches read by the tests themselves (test_init_lvs.py's skipif)
            **{k: os.environ[k] for k in ("DCNET_KERNEL_LAB_SLOW",) if k in os.environ},
            "HOME": "/root",
            "TMPDIR": "/tmp",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        }
        memory = os.environ.get(ENV_MEMORY, "2G")
        cpus = int(os.environ.get(ENV_CPUS, "2"))
        tr = self._terminal()
        if tr is not None:
            tr.ensure_newline()
            where = "in the background" if self.background else "now"
            tr.write(f"kernel lab: booting guest kernel for {len(nodeids)} test(s) {where} "
                     f"(console log {self.log_path})\n", flush=True)
        try:
            self.guest = kernel_lab.start_in_guest(
                argv, rwdirs=[self.workdir], memory=memory, cpus=cpus,
                timeout=kernel_lab.guest_timeout(), env=env, cwd=rootdir,
                log_path=self.log_path,
            )
        except kernel_lab.KernelLabError as exc:
            self.run = exc.run
            self.error = str(exc).split("\n", 1)[0]  # the log tail is added per test

    def finish(self) -> None:
        """Wait for the guest (started by :meth:`start`) and read its reports."""
        tr = self._terminal()
        if self.guest is not None:
            if tr is not None:
                tr.ensure_newline()
                tr.write("kernel lab: waiting for the guest ... ", flush=True)
            try:
                self.run = self.guest.wait()
            except kernel_lab.KernelLabError as exc:
                self.run = exc.run
                self.error = str(exc).split("\n", 1)[0]
            self.guest = None
        try:
            with open(self.reports_path, encoding="utf-8") as fh:
                self.reports, self.finished = decode_reports(fh)
        except OSError:
            self.reports, self.finished = {}, set()
        if tr is not None:
            if self.run is not None:
                status = "ok" if self.run.ok else (
                    "TIMED OUT" if self.run.timed_out else f"exit {self.run.returncode}")
                tr.write(
                    f"{self.run.kernel.name}, {self.run.seconds:.1f}s wall "
                    f"(boot + {len(self.finished)}/{len(self.remote)} tests, {status}); "
                    f"log {self.log_path}\n", flush=True)
            else:
                tr.write("FAILED\n", flush=True)
            tr.currentfspath = None  # next result starts a fresh line
        if self.error is None and self.run is not None and self.run.returncode not in (0, 1):
            self.error = (f"kernel lab: guest pytest exited with status {self.run.returncode}"
                          f" (console log {self.log_path})")
        self.done = True

    def failure_text(self, nodeid: str) -> str:
        head = self.error or (
            f"kernel lab: no complete report for {nodeid} from the guest "
            f"(guest died, crashed or did not collect it)")
        tail = self.run.log_tail(60) if self.run is not None else ""
        return f"{head}\n--- guest console log (tail) ---\n{tail}" if tail else head

    def cleanup(self) -> None:
        if self.guest is not None:       # the session ended before the guest's tests
            self.guest.stop()
            self.guest = None
        if self.workdir is None or os.environ.get(ENV_KEEP) == "1":
            return
        complete = self.error is None and all(n in self.finished for n in self.remote)
        if complete and self.run is not None and self.run.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- replay
    def replay(self, item, nextitem) -> None:
        config = item.config
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        datas = self.reports.get(item.nodeid, [])
        whens = []
        for data in datas:
            rep = report_from_data(config, data)
            whens.append(rep.when)
            ihook.pytest_runtest_logreport(report=rep)
        if "teardown" not in whens or item.nodeid not in self.finished:
            when = "call" if "call" not in whens else "teardown"
            rep = pytest.TestReport(
                item.nodeid, item.location, keywords={k: 1 for k in item.keywords},
                outcome="failed", longrepr=self.failure_text(item.nodeid), when=when,
            )
            ihook.pytest_runtest_logreport(report=rep)
        self._teardown_host_state(item, nextitem)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    @staticmethod
    def _teardown_host_state(item, nextitem) -> None:
        # Fixtures of earlier host-run items that nextitem does not need must be torn
        # down here, as the normal runner would at this item's teardown.
        setupstate = getattr(item.session, "_setupstate", None)
        if setupstate is None or not getattr(setupstate, "stack", None):
            return
        try:
            setupstate.teardown_exact(nextitem)
        except BaseException as exc:  # report, keep the session going
            rep = pytest.TestReport(
                item.nodeid, item.location, keywords={}, outcome="failed",
                longrepr=f"kernel lab: tearing down host fixtures failed: {exc!r}",
                when="teardown",
            )
            item.ihook.pytest_runtest_logreport(report=rep)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    lab = session.config.stash.get(_STATE_KEY, None)
    if lab is None:
        return
    lab.select(session.items)
    if lab.background and lab.remote:       # host tests first, while the guest works
        session.items[:] = host_first(session.items, lab.remote)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    lab = session.config.stash.get(_STATE_KEY, None)
    if (lab is not None and lab.background and lab.remote and not lab.ran
            and not session.config.option.collectonly):
        lab.start()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    lab = item.config.stash.get(_STATE_KEY, None)
    if lab is None or item.nodeid not in lab.remote:
        return None
    if not lab.ran:
        lab.start()
    if not lab.done:
        lab.finish()
    lab.replay(item, nextitem)
    return True


def pytest_unconfigure(config):
    lab = config.stash.get(_STATE_KEY, None)
    if lab is not None:
        lab.cleanup()
