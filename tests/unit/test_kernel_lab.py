"""Unit tests of the kernel lab's pure parts: vng command line, kernel choice, reports."""

import shlex
import subprocess
import sys
import textwrap

import pytest

from dcnet.lab import kernel_lab as kl
from dcnet.lab import pytest_kernel_lab as pkl

pytestmark = pytest.mark.unit


def test_vng_command_line():
    shell = kl.build_guest_shell(
        ["/venv/bin/python", "-m", "pytest", "tests/k.py::t[a b]"],
        cwd="/work/main",
        env={"A": "1", "B": "x y"},
    )
    assert shell == (
        "cd /work/main && exec env A=1 'B=x y' /venv/bin/python -m pytest 'tests/k.py::t[a b]'"
    )
    cmd = kl.build_vng_command(
        "/boot/vmlinuz-6.1.0-56-amd64", shell, vng="/venv/bin/vng",
        rwdirs=["/tmp/lab"], memory="3G", cpus=2, cwd="/work/main",
    )
    assert cmd == [
        "/venv/bin/vng", "--run", "/boot/vmlinuz-6.1.0-56-amd64", "--user", "root",
        "--disable-kvm", "--memory", "3G", "--cpus", "2", "--cwd", "/work/main",
        "--rwdir", "/tmp/lab", "--exec", shell,
    ]
    # what the guest shell will execute is exactly the argv we gave
    assert shlex.split(shell)[-4:] == [
        "/venv/bin/python", "-m", "pytest", "tests/k.py::t[a b]"]


def test_guest_shell_requires_argv():
    with pytest.raises(ValueError):
        kl.build_guest_shell([])


def test_version_key_orders_numerically():
    vers = ["6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64", "6.10.1-1-amd64"]
    assert sorted(vers, key=kl.version_key)[-1] == "6.10.1-1-amd64"
    assert sorted(vers, key=kl.version_key)[0] == "5.10.0-30-amd64"
    assert kl.version_key("6.1.0-56-amd64") > kl.version_key("6.1.0-9-amd64")


def test_select_kernel_from_fake_boot_listing():
    names = [
        "System.map-6.1.0-56-amd64", "config-6.1.0-56-amd64", "initrd.img-6.1.0-56-amd64",
        "vmlinuz-6.1.0-56-amd64", "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.18.44-fc",
        "vmlinuz-6.1.0-9-amd64.old",
    ]
    with_ipvs = {"6.1.0-56-amd64", "6.1.0-9-amd64"}
    assert kl.select_guest_kernel(names, with_ipvs.__contains__) == "vmlinuz-6.1.0-56-amd64"
    assert kl.select_guest_kernel(names, {"6.1.0-9-amd64"}.__contains__) == (
        "vmlinuz-6.1.0-9-amd64")
    assert kl.select_guest_kernel(names, lambda v: False) is None


def test_find_guest_kernel_in_fake_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("DCNET_KERNEL_LAB_KERNEL", raising=False)
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for ver in ("6.1.0-56-amd64", "6.5.0-1-amd64", "6.18.44-fc"):
        (boot / f"vmlinuz-{ver}").write_bytes(b"")
    good = mods / "6.1.0-56-amd64"
    good.mkdir(parents=True)
    (good / "modules.dep").write_text(
        "kernel/net/netfilter/ipvs/ip_vs.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz\n"
        "kernel/net/sched/sch_netem.ko.xz:\n")
    (mods / "6.5.0-1-amd64").mkdir()
    (mods / "6.5.0-1-amd64" / "modules.dep").write_text("kernel/drivers/net/dummy.ko:\n")
    assert kl.find_guest_kernel(boot, mods) == boot / "vmlinuz-6.1.0-56-amd64"
    assert kl.kernel_has_module(good, "sch_netem")
    assert not kl.kernel_has_module(good, "ip_vs_rr")
    # built in counts
    (mods / "6.5.0-1-amd64" / "modules.builtin").write_text("kernel/net/netfilter/ipvs/ip_vs.ko\n")
    assert kl.find_guest_kernel(boot, mods) == boot / "vmlinuz-6.5.0-1-amd64"


def test_find_guest_kernel_names_package(tmp_path, monkeypatch):
    monkeypatch.delenv("DCNET_KERNEL_LAB_KERNEL", raising=False)
    (tmp_path / "vmlinuz-6.18.44-fc").write_bytes(b"")
    with pytest.raises(kl.KernelLabError, match="linux-image-amd64"):
        kl.find_guest_kernel(tmp_path, tmp_path / "nomods")


def test_guest_run_log_tail(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    run = kl.GuestRun(command=["vng"], kernel=tmp_path / "k", log_path=log, returncode=0)
    assert run.ok
    assert run.log_tail(3) == "line 97\nline 98\nline 99"
    missing = kl.GuestRun(command=["vng"], kernel=tmp_path / "k", log_path=tmp_path / "x")
    assert "no console log" in missing.log_tail()
    assert not missing.ok


def test_guest_pytest_argv():
    argv = pkl.guest_pytest_argv(
        "/venv/bin/python", "/tmp/lab/nodeids.txt", rootdir="/work/main",
        inifile="/work/main/setup.cfg", tbstyle="short", noconftest=True,
        plugins=["dcnet.lab.pytest_kernel_lab", "no:cacheprovider", "xdist"],
    )
    assert argv[:5] == ["/venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider"]
    assert argv.count("dcnet.lab.pytest_kernel_lab") == 1
    assert argv.count("no:cacheprovider") == 1
    assert argv[argv.index("xdist") - 1:argv.index("xdist") + 1] == ["-p", "xdist"]
    assert "--noconftest" in argv and "--tb=short" in argv
    assert argv[-1] == "@/tmp/lab/nodeids.txt"


def _long_nodeids(count: int) -> list[str]:
    # long parametrized ids with spaces and brackets, as pytest prints them
    return [f"test_many.py::test_case[{i:04d} {'x' * 150} a b]" for i in range(count)]


def test_many_long_nodeids_go_through_a_file_not_the_kernel_command_line(tmp_path):
    """500 node ids of ~180 characters (~90 KiB): the guest command stays far below the
    kernel command line's ~2 KiB, and the file holds every id exactly."""
    nodeids = _long_nodeids(500)
    path = tmp_path / "nodeids.txt"
    pkl.write_nodeids(path, nodeids)
    argv = pkl.guest_pytest_argv("/venv/bin/python", path, rootdir="/work/main",
                                 inifile="/work/main/setup.cfg")
    shell = kl.build_guest_shell(argv, cwd="/work/main", env={
        "DCNET_IN_KERNEL_LAB": "1", "DCNET_KERNEL_LAB_REPORTS": str(tmp_path / "r.jsonl"),
        "PATH": "/work/main/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"})
    assert sum(len(n) for n in nodeids) > 80_000
    assert len(shell) * 4 / 3 < 1024          # base64 on the command line: well under 2 KiB
    assert path.read_text().split("\n") == ["--", *nodeids, ""]
    with pytest.raises(ValueError, match="line break"):
        pkl.write_nodeids(tmp_path / "bad.txt", ["test_a.py::test[x\ny]"])


def test_pytest_runs_exactly_the_nodeids_of_the_file(tmp_path):
    """The mechanism itself: pytest (``@FILE``) selects exactly the listed long ids."""
    count = 300
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_many.py").write_text(textwrap.dedent(f"""
        import pytest

        IDS = [f"{{i:04d}} {'x' * 150} a b" for i in range({count + 5})]

        @pytest.mark.parametrize("i", range({count + 5}), ids=IDS)
        def test_case(i):
            pass
    """))
    wanted = _long_nodeids(count)
    pkl.write_nodeids(tmp_path / "nodeids.txt", wanted)
    argv = pkl.guest_pytest_argv(sys.executable, tmp_path / "nodeids.txt",
                                 rootdir=str(tmp_path), inifile=str(tmp_path / "pytest.ini"))
    done = subprocess.run([*argv, "--collect-only"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if line.startswith("test_many.py::")]
    assert collected == wanted


def test_guest_timeout_default_env_and_bad_values():
    assert kl.guest_timeout({}) == kl.DEFAULT_TIMEOUT >= 3600
    assert kl.guest_timeout({"DCNET_KERNEL_LAB_TIMEOUT": "5400"}) == 5400.0
    assert kl.guest_timeout({"DCNET_KERNEL_LAB_TIMEOUT": " "}) == kl.DEFAULT_TIMEOUT
    for bad in ("0", "-5", "soon", "inf", "nan"):
        with pytest.raises(kl.KernelLabError, match="DCNET_KERNEL_LAB_TIMEOUT"):
            kl.guest_timeout({"DCNET_KERNEL_LAB_TIMEOUT": bad})


def test_plugin_args_from_command_line():
    args = ["-v", "-p", "a.b", "-pno:foo", "tests", "-p"]
    assert pkl._plugin_args(args) == ["a.b", "no:foo"]


def test_report_serialisation_round_trip(pytestconfig):
    rep = pytest.TestReport(
        "tests/kernel/test_x.py::test_y", ("tests/kernel/test_x.py", 3, "test_y"),
        keywords={"test_y": 1, "kernel": 1}, outcome="failed",
        longrepr="AssertionError: assert 1 == 5", when="call",
        sections=[("Captured stdout call", "hello\n")], duration=0.25,
    )
    hook = pytestconfig.hook
    data = hook.pytest_report_to_serializable(config=pytestconfig, report=rep)
    lines = [
        pkl.encode_report(rep.nodeid, data),
        pkl.encode_finish(rep.nodeid),
        '{"nodeid": "tests/kernel/test_x.py::test_z", "rep',  # truncated by a dying guest
    ]
    reports, finished = pkl.decode_reports(lines)
    assert finished == {rep.nodeid}
    assert list(reports) == [rep.nodeid]
    back = pkl.report_from_data(pytestconfig, reports[rep.nodeid][0])
    assert isinstance(back, pytest.TestReport)
    assert (back.nodeid, back.when, back.outcome, back.location) == (
        rep.nodeid, "call", "failed", rep.location)
    assert "assert 1 == 5" in str(back.longrepr)
    assert back.sections == rep.sections
    assert back.duration == rep.duration


def test_a_skip_replayed_from_the_guest_keeps_its_tuple_longrepr(pytestconfig):
    """pytest's folded skip summary asserts a skip's longrepr is a tuple; JSON made it a
    list, and the whole session ended in an internal error after a skipped kernel test."""
    rep = pytest.TestReport(
        "tests/kernel/test_x.py::test_slow", ("tests/kernel/test_x.py", 3, "test_slow"),
        keywords={"test_slow": 1}, outcome="skipped",
        longrepr=("tests/kernel/test_x.py", 4, "Skipped: slow"), when="setup")
    hook = pytestconfig.hook
    data = hook.pytest_report_to_serializable(config=pytestconfig, report=rep)
    reports, _ = pkl.decode_reports([pkl.encode_report(rep.nodeid, data)])
    back = pkl.report_from_data(pytestconfig, reports[rep.nodeid][0])
    assert back.skipped and back.longrepr == rep.longrepr
    assert isinstance(back.longrepr, tuple)


def test_item_modules_default_and_union():
    class FakeItem:
        def __init__(self, marks):
            self.marks = marks

        def iter_markers(self, name):
            return [m for m in self.marks if m.name == name]

    assert pkl.item_modules(FakeItem([pytest.mark.kernel.mark])) == ("ip_vs",)
    item = FakeItem([pytest.mark.kernel("sch_netem").mark, pytest.mark.kernel.mark])
    assert pkl.item_modules(item) == ("sch_netem", "ip_vs")
    assert pkl.item_modules(FakeItem([])) == ()


def test_host_tests_run_first_while_the_guest_runs_the_others():
    from types import SimpleNamespace

    from dcnet.lab.pytest_kernel_lab import host_first

    items = [SimpleNamespace(nodeid=n) for n in ("k1", "h1", "k2", "h2", "h3")]
    assert [i.nodeid for i in host_first(items, ["k2", "k1"])] == ["h1", "h2", "h3", "k1", "k2"]
    assert host_first(items, []) == items
