"""Installing the plugin: ``dcnet`` (the C shim) and ``dcnet-python`` in the CNI bin dir.

``dcnet-python`` is the whole plugin in Python: a three-line script run as
``python -I -S`` (isolated, no site import) that puts dcnet's package root on
``sys.path`` and calls ``dcnet.cni.plugin.main``. ``dcnet`` is the shim
(``shim/dcnet-cni-shim.c``, compiled here with ``cc`` and the exec socket directory and
the path of ``dcnet-python`` built in): it hands the invocation to the node's
``dcnet-agent`` (``dcnet.cni.execd``) and execs ``dcnet-python`` when no agent answers.
Without a C compiler (or with ``client="launcher"``) ``dcnet`` is the Python launcher
itself, as before; ``client="python"`` installs the shim's Python twin
(``shim/thin.py``), kept for the benchmark. Every file is written under a temporary
name and renamed into place, so a runtime exec'ing the old one never sees a half-written
file ("text file busy" cannot happen on rename). With ``conf_dir`` the network's conflist
is written there too (``install_conflist``: checked first, written atomically under a
stable name, ``10-dcnet.conflist`` unless told otherwise, so a re-install replaces it and
kubelet never reads half a file). Nothing is written into the installed Python package
(no byte-compiling there: it may be read-only, shared, or owned by the OS packager).
``load_conf_file`` reads a .conf or .conflist for tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import dcnet
from dcnet.cni.config import NetConf, load_conf, pick_plugin
from dcnet.cni.errors import CniError
from dcnet.sysio.files import atomic_write

PLUGIN_NAME = "dcnet"
FALLBACK_NAME = "dcnet-python"
CLIENTS = ("auto", "c", "python", "launcher")
CONF_NAME = "10-dcnet.conflist"
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
SHIM_SOURCE = os.path.join(SHIM_DIR, "dcnet-cni-shim.c")
THIN_SOURCE = os.path.join(SHIM_DIR, "thin.py")


class InstallError(RuntimeError):
    """The plugin could not be installed as asked (e.g. no C compiler for ``client="c"``)."""


def package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(dcnet.__file__)))


def launcher_text(python: str | None = None, root: str | None = None) -> str:
    python = python or sys.executable
    root = root or package_root()
    return (f"#!{python} -IS\n"
            f"# dcnet CNI plugin launcher, written by 'dcnet-cni install'.\n"
            f"import sys\n"
            f"sys.path.insert(0, {root!r})\n"
            f"from dcnet.cni.plugin import main\n"
            f"main()\n")


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_shim(output: str, exec_dir: str, fallback: str, cc: str | None = None) -> str:
    """Compile the C shim to ``output`` (static when libc.a is there); returns the
    compiler's name. InstallError when no compiler works."""
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise InstallError("no C compiler (cc) to build the dcnet shim")
    base = [cc, "-O2", "-Wall", "-s", f"-DDCNET_EXEC_DIR={_c_string(exec_dir)}",
            f"-DDCNET_FALLBACK={_c_string(fallback)}", "-o", output, SHIM_SOURCE]
    errors = ""
    for extra in (["-static"], []):  # static: no dynamic loader work per pod
        done = subprocess.run([*base[:1], *extra, *base[1:]], capture_output=True, text=True)
        if done.returncode == 0:
            return cc
        errors = done.stderr
    raise InstallError(f"compiling {SHIM_SOURCE} failed: {errors.strip()}")


def thin_client_text(exec_dir: str, fallback: str, python: str | None = None) -> str:
    with open(THIN_SOURCE) as handle:
        body = handle.read()
    return (f"#!{python or sys.executable} -IS\n"
            f"EXEC_DIR = {exec_dir!r}\nFALLBACK = {fallback!r}\n{body}")


def _write_atomic(target: str, text: str | None = None, build=None) -> None:
    """Install ``text``, or what ``build(path)`` writes at a scratch path, as ``target``
    (mode 0755, atomically)."""
    if build is None:
        atomic_write(target, text, mode=0o755, fsync=False)
        return
    with tempfile.TemporaryDirectory(prefix=".dcnet-build-",
                                     dir=os.path.dirname(target) or ".") as scratch:
        built = os.path.join(scratch, PLUGIN_NAME)
        build(built)
        with open(built, "rb") as handle:
            data = handle.read()
    atomic_write(target, data, mode=0o755, fsync=False)


def check_conflist(source: str) -> bytes:
    """The bytes of the conflist ``source`` once it parses with a usable ``dcnet`` entry;
    InstallError names what is wrong with it."""
    try:
        with open(source, "rb") as handle:
            data = handle.read()
        load_conf_file(source)
    except (OSError, ValueError, CniError) as exc:
        raise InstallError(f"{source}: {exc}") from None
    return data


def install_conflist(conf_dir: str, source: str, name: str = CONF_NAME) -> str:
    """Check the conflist ``source`` and write it as ``<conf_dir>/<name>`` atomically
    (mode 0644, fsynced: kubelet reads it at boot); returns the path."""
    if os.sep in name or not name.endswith((".conflist", ".conf")):
        raise InstallError(f"conf name {name!r}: a file name ending .conflist or .conf")
    data = check_conflist(source)
    os.makedirs(conf_dir, exist_ok=True)
    target = os.path.join(conf_dir, name)
    atomic_write(target, data, mode=0o644, fsync=True)
    return target


def install(bin_dir: str, python: str | None = None, client: str = "auto",
            exec_dir: str | None = None) -> str:
    """Write ``<bin_dir>/dcnet-python`` and ``<bin_dir>/dcnet`` (mode 0755); returns the
    path of ``dcnet``. ``client``: ``auto`` (the C shim if ``cc`` works, else the Python
    launcher), ``c`` (the shim or InstallError), ``python`` (the Python twin of the shim),
    ``launcher`` (no shim: ``dcnet`` is the Python plugin itself)."""
    from dcnet.cni.execd import DEFAULT_DIR

    if client not in CLIENTS:
        raise InstallError(f"unknown client {client!r}: one of {', '.join(CLIENTS)}")
    exec_dir = exec_dir or DEFAULT_DIR
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, PLUGIN_NAME)
    fallback = os.path.join(os.path.abspath(bin_dir), FALLBACK_NAME)
    _write_atomic(fallback, launcher_text(python))
    if client == "python":
        _write_atomic(target, thin_client_text(exec_dir, fallback, python))
    elif client in ("auto", "c"):
        try:
            _write_atomic(target, build=lambda out: compile_shim(out, exec_dir, fallback))
        except InstallError as exc:
            if client == "c":
                raise
            print(f"dcnet-cni install: {exc}; installing the Python plugin as {target}",
                  file=sys.stderr)
            _write_atomic(target, launcher_text(python))
    else:
        _write_atomic(target, launcher_text(python))
    return target


def installed_kind(path: str) -> str:
    """``c`` (an ELF shim), ``python`` (the Python shim) or ``launcher``."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"\x7fELF"):
        return "c"
    return "python" if b"FALLBACK = " in head else "launcher"


def load_conf_file(path: str) -> NetConf:
    """A .conf or .conflist file's dcnet config (ValueError/CniError on bad input)."""
    with open(path) as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return load_conf(pick_plugin(raw))
