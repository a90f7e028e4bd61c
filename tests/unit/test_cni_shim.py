"""Unit tests of the CNI shim: the DCX1 framing, the agent-side runner, and the installed
clients (the C shim and its Python twin) against a real unix-socket server.

The client tests build the client into ``tmp_path`` with its own exec directory and a
fake ``dcnet-python`` (it prints what it received), then run it against an in-process
``ExecServer`` with a scripted handler, against raw servers that decline, truncate,
hang up or are SIGKILLed mid-request, and against no server at all. They need root
(both sides insist on a uid-0 peer) and, for the C shim, ``cc``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

from dcnet.cni import execd
from dcnet.cni.install import InstallError, install, installed_kind
from dcnet.cni.skel import dispatch

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- framing


def test_request_round_trip_keeps_only_cni_variables_and_bytes():
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "a=b;c=d=e", "PATH": "/bin", "CNI_X": ""}
    stdin = bytes(range(256)) * 3
    decoded_env, decoded_stdin = execd.decode_request(execd.encode_request(env, stdin))
    assert decoded_env == {"CNI_COMMAND": "ADD", "CNI_ARGS": "a=b;c=d=e", "CNI_X": ""}
    assert decoded_stdin == stdin


@pytest.mark.parametrize("data", [b"", b"XXXX\0\0\0\0\0\0\0\0", b"DCX1\0\0\0\x05ab",
                                  execd.encode_request({"CNI_COMMAND": "DEL"}, b"{}")[:-1],
                                  execd.encode_request({"CNI_COMMAND": "DEL"}, b"{}") + b"x"])
def test_malformed_requests_are_refused(data):
    with pytest.raises(execd.ProtocolError):
        execd.decode_request(data)


def test_environment_entries_must_be_cni_pairs():
    with pytest.raises(execd.ProtocolError):
        execd.decode_env(b"PATH=/bin\0")
    with pytest.raises(execd.ProtocolError):
        execd.decode_env(b"CNI_COMMAND\0")
    assert execd.decode_env(b"CNI_A==x\0\0CNI_B=\xff\0") == {"CNI_A": "=x",
                                                           "CNI_B": "\udcff"}


def test_reply_round_trip_and_decline():
    data = execd.encode_reply(7, b"\0out\xff", b"err\n")
    assert execd.decode_reply(data) == ("R", 7, b"\0out\xff", b"err\n")
    assert execd.decode_reply(execd.encode_decline("stopping")) == ("F", 0, b"stopping", b"")
    for broken in (data[:-1], data + b"x", b"DCX1R\0\0", b"DCX1Z" + data[5:]):
        with pytest.raises(execd.ProtocolError):
            execd.decode_reply(broken)


def test_socket_path_is_keyed_by_namespace_inode():
    assert execd.socket_path("/run/x/", 4026531840) == "/run/x/net-4026531840.sock"
    assert execd.socket_path("/d") == f"/d/net-{os.stat('/proc/self/ns/net').st_ino}.sock"


def test_read_request_stops_at_the_limits():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"DCX1" + (execd.MAX_ENV + 1).to_bytes(4, "big"))
        with pytest.raises(execd.ProtocolError, match="environment too large"):
            execd.read_request(right)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(execd.encode_request({"CNI_COMMAND": "ADD"}, b"{}")[:-1])
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(execd.ProtocolError, match="closed mid-request"):
            execd.read_request(right)


# ---------------------------------------------------------------- the agent-side runner


@pytest.mark.parametrize("env, stdin", [
    ({"CNI_COMMAND": "VERSION"}, b""),
    ({"CNI_COMMAND": "ADD"}, b"{}"),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nope", "CNI_IFNAME": "eth0",
      "CNI_PATH": "/x"}, b"{not json"),
    ({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"},
     b'{"cniVersion":"0.4.0","name":"n","type":"dcnet"}'),
    ({}, b""),
])
def test_run_plugin_answers_exactly_as_the_plugin_process(env, stdin):
    out, err = io.StringIO(), io.StringIO()
    code = dispatch(__import__("dcnet.cni.plugin", fromlist=["ModeRouter"]).ModeRouter(),
                    env, io.BytesIO(stdin), out, err)
    assert execd.run_plugin(env, stdin) == (code, out.getvalue().encode(),
                                            err.getvalue().encode())


def test_stderr_is_captured_per_thread():
    capture = execd._capturing_stderr()
    seen = {}

    def worker(name: str) -> None:
        buffer = io.StringIO()
        capture.local.buffer = buffer
        for _ in range(200):
            sys.stderr.write(name)
        capture.local.buffer = None
        seen[name] = buffer.getvalue()

    threads = [threading.Thread(daemon=True, target=worker, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": "a" * 200, "b": "b" * 200}


# ---------------------------------------------------------------- the installed clients

FAKE_FALLBACK = textwrap.dedent("""\
    #!{python} -IS
    import hashlib, json, os, sys
    data = sys.stdin.buffer.read()
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
    print(json.dumps({{"fallback": True, "env": env, "sha": hashlib.sha256(data).hexdigest(),
                      "len": len(data)}}))
    sys.stderr.write("fallback ran\\n")
    sys.exit(42)
""")


def needs_root_and(client: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the shim and the agent accept only uid-0 peers")
    if client == "c" and not shutil.which("cc"):
        pytest.skip("no C compiler")


class Shim:
    """A client installed in a private bin dir, with a fake dcnet-python."""

    def __init__(self, root, client: str, exec_dir: str | None = None):
        self.exec_dir = exec_dir or str(root / "exec")
        self.bin = str(root / f"bin-{client}")
        self.path = install(self.bin, client=client, exec_dir=self.exec_dir)
        with open(os.path.join(self.bin, "dcnet-python"), "w") as handle:
            handle.write(FAKE_FALLBACK.format(python=sys.executable))
        self.socket = execd.socket_path(self.exec_dir)

    def run(self, env: dict, stdin: bytes = b"", **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([self.path], input=stdin, env=env, capture_output=True,
                              timeout=60, **kwargs)


@pytest.fixture(params=["c", "python"])
def shim(request, tmp_path):
    needs_root_and(request.param)
    return Shim(tmp_path, request.param)


def serve(shim: Shim, handler) -> execd.ExecServer:
    server = execd.ExecServer(shim.exec_dir, log=lambda text: None, handler=handler)
    server.listen()
    return server


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/a b",
           "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p=q",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/bin:/bin", "NOT_CNI": "x"}
CNI_ONLY = {k: v for k, v in ADD_ENV.items() if k.startswith("CNI_")}


def test_install_builds_the_requested_client(tmp_path):
    needs_root_and("c")
    assert installed_kind(install(str(tmp_path / "c"), client="c")) == "c"
    assert installed_kind(install(str(tmp_path / "p"), client="python")) == "python"
    assert installed_kind(install(str(tmp_path / "l"), client="launcher")) == "launcher"
    with open(tmp_path / "c" / "dcnet-python") as handle:
        assert "from dcnet.cni.plugin import main" in handle.read()
    with pytest.raises(InstallError):
        install(str(tmp_path / "x"), client="go")


def test_env_stdin_exit_code_and_output_pass_through(shim):
    seen = []

    def handler(env, stdin):
        seen.append((env, stdin))
        return 7, b'{"code": 7, "msg": "\xc3\xa9"}\n\0tail', b"dcnet: log\n"

    server = serve(shim, handler)
    try:
        stdin = b'{"cniVersion":"1.1.0"}' + bytes(range(256))
        done = shim.run(ADD_ENV, stdin)
    finally:
        server.close()
    assert (done.returncode, done.stdout, done.stderr) == (
        7, b'{"code": 7, "msg": "\xc3\xa9"}\n\0tail', b"dcnet: log\n")
    assert seen == [(CNI_ONLY, stdin)]
    assert not os.path.exists(shim.socket)


def test_large_stdin_and_stdout(shim):
    big = os.urandom(8 << 20)

    def handler(env, stdin):
        return 0, hashlib.sha256(stdin).hexdigest().encode() * 100_000, b""

    server = serve(shim, handler)
    try:
        done = shim.run(ADD_ENV, big)
    finally:
        server.close()
    assert done.returncode == 0
    assert done.stdout == hashlib.sha256(big).hexdigest().encode() * 100_000


def test_version_and_about_do_not_read_stdin(shim):
    server = serve(shim, lambda env, stdin: (0, repr(stdin).encode(), b""))
    try:
        for env in ({"CNI_COMMAND": "VERSION"}, {}):
            with subprocess.Popen([shim.path], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE) as child:  # stdin never closed
                out = child.stdout.read()
                assert child.wait(timeout=60) == 0
                child.stdin.close()
            assert out == b"b''"
    finally:
        server.close()


def fallback_answer(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 42, done
    answer = json.loads(done.stdout)
    assert answer["fallback"] is True
    return answer


def test_no_agent_runs_the_fallback_with_untouched_stdin(shim):
    stdin = b"x" * 300_000
    answer = fallback_answer(shim.run(ADD_ENV, stdin))
    assert answer["env"] == CNI_ONLY
    assert (answer["len"], answer["sha"]) == (len(stdin), hashlib.sha256(stdin).hexdigest())
    assert shim.run(ADD_ENV, stdin).stderr == b"fallback ran\n"  # nothing else said


def raw_server(shim: Shim, behaviour: str) -> subprocess.Popen:
    """A root server process on the shim's socket that reads one request, then:
    ``kill`` SIGKILLs itself, ``decline`` answers F, ``truncate`` half an answer,
    ``hangup`` closes without a word."""
    script = textwrap.dedent(f"""
        import os, signal, socket
        from dcnet.cni import execd
        os.makedirs({shim.exec_dir!r}, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind({shim.socket!r})
        sock.listen(1)
        print("ready", flush=True)
        conn, _ = sock.accept()
        request = execd.read_request(conn)
        with open({shim.socket!r} + ".seen", "wb") as handle:
            handle.write(request)
        behaviour = {behaviour!r}
        if behaviour == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if behaviour == "decline":
            conn.sendall(execd.encode_decline("stopping"))
        if behaviour == "truncate":
            conn.sendall(execd.encode_reply(0, b"x" * 1000, b"")[:500])
        conn.close()
        os.unlink({shim.socket!r})
    """)
    os.makedirs(shim.exec_dir, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


@pytest.mark.parametrize("behaviour", ["kill", "decline", "truncate", "hangup"])
def test_agent_lost_mid_request_runs_the_fallback_with_the_same_input(shim, behaviour):
    stdin = os.urandom(1 << 20)
    server = raw_server(shim, behaviour)
    try:
        done = shim.run(ADD_ENV, stdin)
    finally:
        server.wait(timeout=60)
        server.stdout.close()
        if os.path.exists(shim.socket):
            os.unlink(shim.socket)
    if behaviour == "kill":
        assert server.returncode == -signal.SIGKILL
    answer = fallback_answer(done)
    assert answer["env"] == CNI_ONLY
    assert (answer["len"], answer["sha"]) == (len(stdin), hashlib.sha256(stdin).hexdigest())
    with open(shim.socket + ".seen", "rb") as handle:  # the agent had the whole request
        assert execd.decode_request(handle.read()) == (CNI_ONLY, stdin)
    said = done.stderr.decode()
    if behaviour == "decline":
        assert said == "fallback ran\n"
    else:
        assert said.startswith("dcnet: ") and "running the plugin in-process" in said


def test_a_server_that_is_not_root_is_never_used(request):
    needs_root_and("c")
    exec_dir = tempfile.mkdtemp(prefix="dcnet-shim-")
    request.addfinalizer(lambda: shutil.rmtree(exec_dir, ignore_errors=True))
    os.chmod(exec_dir, 0o777)
    root = tempfile.mkdtemp(prefix="dcnet-shim-bin-")
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    from pathlib import Path

    shim = Shim(Path(root), "c", exec_dir)
    script = textwrap.dedent(f"""
        import socket
        sock = socket.socket(socket.AF_UNIX)
        sock.bind({shim.socket!r})
        sock.listen(1)
        print("ready", flush=True)
        conn, _ = sock.accept()
        conn.recv(1 << 20)
        conn.sendall(b"DCX1R" + bytes(8))  # a forged success
    """)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    child = subprocess.Popen([python, "-S", "-c", script], stdout=subprocess.PIPE,
                             user=65534, group=65534)
    try:
        assert child.stdout.readline() == b"ready\n"
        fallback_answer(shim.run(ADD_ENV, b"{}"))
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_server_socket_is_root_only_and_replaced_when_stale(tmp_path):
    needs_root_and("python")
    exec_dir = str(tmp_path / "exec")
    server = execd.ExecServer(exec_dir, log=lambda text: None)
    server.listen()
    try:
        assert os.stat(exec_dir).st_mode & 0o777 == 0o700
        assert os.stat(server.path).st_mode & 0o777 == 0o600
        second = execd.ExecServer(exec_dir, log=lambda text: None)
        with pytest.raises(RuntimeError, match="another dcnet-agent"):
            second.listen()
    finally:
        server.close()
    stale = socket.socket(socket.AF_UNIX)  # a dead agent's socket file
    stale.bind(server.path)
    stale.close()
    third = execd.ExecServer(exec_dir, log=lambda text: None)
    third.listen()
    third.close()
    assert not os.path.exists(server.path)


def test_without_a_compiler_dcnet_is_the_python_plugin(tmp_path, monkeypatch):
    import dcnet.cni.install as install_mod

    monkeypatch.setattr(install_mod.shutil, "which", lambda name: None)
    with pytest.raises(InstallError, match="no C compiler"):
        install(str(tmp_path / "strict"), client="c")
    path = install(str(tmp_path / "auto"))
    assert installed_kind(path) == "launcher"
    assert sorted(os.listdir(tmp_path / "auto")) == ["dcnet", "dcnet-python"]
