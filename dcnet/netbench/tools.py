"""What every benchmark tool runner shares: checking the tool exists, errors, outcomes.

A runner (``iperf3``, ``sockperf``, ``connrate``) is a small object with ``check()``
(is the program installed; raises ToolMissing saying which Debian package has it),
``server_argv``/``client_argv`` (commands as argv lists, never shell strings) and a pure
``parse(stdout, stderr, returncode)`` returning a :class:`Measurement` or raising
:class:`ToolFailed` with the tool's own error message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ToolMissing(RuntimeError):
    """The program is not installed; the message names the package to install."""


class ToolFailed(RuntimeError):
    """The tool ran but reported an error (its own message is kept)."""


@dataclass
class Measurement:
    """What one client run measured: named metrics plus extras kept in the result file."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


def require(program: str, package: str) -> str:
    """The program's path; ToolMissing naming ``package`` if it is not on PATH."""
    path = shutil.which(program)
    if path is None:
        raise ToolMissing(f"{program} not found on PATH (apt-get install -y {package})")
    return path


def version_of(argv: list[str]) -> str:
    """First line of a ``--version`` style command, or '' when it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return first_line(done.stdout + "\n" + done.stderr)


def first_line(text: str) -> str:
    """The first non-empty line of ``text``, colour escapes removed."""
    for line in text.splitlines():
        line = strip_ansi(line).strip()
        if line:
            return line
    return ""


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour escapes (sockperf colours some lines)."""
    return _ANSI.sub("", text)
