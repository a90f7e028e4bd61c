"""The libcni-style plugin invoker for labs and tests: re-exported from
:mod:`dcnet.cni.invoke`, where it lives because product code (the chaos probes) uses it.
"""

from __future__ import annotations

from dcnet.cni.invoke import (  # noqa: F401 (re-exported)
    CniRuntime,
    Execution,
    PluginError,
    exec_plugin,
)
