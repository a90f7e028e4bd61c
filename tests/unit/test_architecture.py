"""Architecture rules of the dcnet package, checked on the source (nothing is imported).

Every module under dcnet/ is parsed with ``ast``; every ``import`` and ``from ... import``
counts, wherever it sits (module level, inside functions, under TYPE_CHECKING). The
rules (docs/testing.md, the team rules): no import cycle between subpackages (a
top-level module such as dcnet/plan.py is a node of its own), nothing outside dcnet/cli
imports dcnet.cli, no module over 500 lines, product code imports neither the labs
(dcnet.lab) nor the demos (dcnet.demo), and every module has a docstring. Each failure
names the modules (and lines) that break the rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dcnet"
MAX_LINES = 500
NOT_PRODUCT = ("dcnet.lab", "dcnet.demo", "dcnet.cli")


@dataclass(frozen=True)
class Import:
    source: str      # the importing module, e.g. dcnet.cni.hostgw
    target: str      # the imported module or name, e.g. dcnet.undo.Undo
    path: str        # dcnet/cni/hostgw.py
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.source} imports {self.target})"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int

    @property
    def relpath(self) -> str:
        return str(self.path.relative_to(ROOT))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        found.append(Module(module_name(path), path, ast.parse(text, str(path)),
                            len(text.splitlines())))
    return tuple(found)


def _resolve_relative(module: Module, level: int, name: str | None) -> str:
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([name] if name else []))


def imports_of(module: Module) -> list[Import]:
    out = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out += [Import(module.name, alias.name, module.relpath, node.lineno)
                    for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, node.level, node.module) if node.level
                    else node.module or "")
            out += [Import(module.name, f"{base}.{alias.name}", module.relpath, node.lineno)
                    for alias in node.names]
    return [i for i in out if i.target == "dcnet" or i.target.startswith("dcnet.")]


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for m in modules() for i in imports_of(m))


@cache
def nodes() -> frozenset[str]:
    return frozenset(".".join(m.name.split(".")[:2]) for m in modules())


def node(name: str) -> str:
    """The subpackage (or top-level module) a dotted name belongs to: dcnet.X; a name
    defined in dcnet/__init__.py (``from dcnet import __version__``) belongs to dcnet."""
    head = ".".join(name.split(".")[:2])
    return head if head in nodes() else "dcnet"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one node (cycles), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def subpackage_cycles() -> list[str]:
    """One message per cycle: its subpackages and every import that closes it."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in all_imports():
        a, b = node(imp.source), node(imp.target)
        if a != b and a != "dcnet" and b != "dcnet":
            edges.setdefault((a, b), []).append(imp)
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    messages = []
    for component in strongly_connected(graph):
        members = set(component)
        lines = [f"import cycle between {', '.join(component)}:"]
        for (a, b), sites in sorted(edges.items()):
            if a in members and b in members:
                lines += [f"  {a} -> {b}: {site.where()}" for site in sites]
        messages.append("\n".join(lines))
    return messages


# ---------------------------------------------------------------- the checker itself


def test_the_parser_sees_imports_inside_functions_and_relative_ones():
    source = ("import os\nfrom dcnet.sysio import proc\nfrom . import ipam\n"
              "def f():\n    import dcnet.cli.demo\n    from ..lab import builder\n")
    fake = Module("dcnet.cni.fake", PACKAGE / "cni" / "fake.py", ast.parse(source), 6)
    assert sorted(i.target for i in imports_of(fake)) == [
        "dcnet.cli.demo", "dcnet.cni.ipam", "dcnet.lab.builder", "dcnet.sysio.proc"]


def test_cycles_are_found_beyond_pairs():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_every_module_is_seen():
    names = {m.name for m in modules()}
    assert {"dcnet", "dcnet.undo", "dcnet.cni.hostgw", "dcnet.cli.elbctl"} <= names


# ---------------------------------------------------------------- the rules


def test_no_import_cycle_between_subpackages():
    cycles = subpackage_cycles()
    assert not cycles, "\n".join(cycles)


def test_nothing_outside_dcnet_cli_imports_dcnet_cli():
    bad = [i.where() for i in all_imports()
           if within(i.target, "dcnet.cli") and not within(i.source, "dcnet.cli")]
    assert not bad, "dcnet.cli imported from outside dcnet/cli:\n  " + "\n  ".join(bad)


def test_no_module_is_over_500_lines():
    big = [f"{m.relpath}: {m.lines} lines" for m in modules() if m.lines > MAX_LINES]
    assert not big, f"modules over {MAX_LINES} lines:\n  " + "\n  ".join(big)


def lab_or_demo_imports(sources: str | None = None) -> list[str]:
    """Imports of dcnet.lab / dcnet.demo by product modules (only those under
    ``sources`` when given)."""
    return [i.where() for i in all_imports()
            if not any(within(i.source, p) for p in NOT_PRODUCT)
            and (sources is None or within(i.source, sources))
            and (within(i.target, "dcnet.lab") or within(i.target, "dcnet.demo"))]


#: Lab tooling: netbench's job is to build each network mode in namespaces and measure
#: it, so it is built on the namespace lab (dcnet.lab.builder, kernel_lab, cni_invoke,
#: cni_dhcp) by design; it may import dcnet.lab, never dcnet.demo, and no product code
#: (the CNI plugin, the agents, the ELB targets) may import netbench.
LAB_TOOLING = ("dcnet.netbench",)


def test_product_code_imports_neither_labs_nor_demos():
    bad = [w for w in lab_or_demo_imports()
           if not any(w.startswith(t.replace(".", "/") + "/") for t in LAB_TOOLING)]
    assert not bad, "product code imports lab or demo code:\n  " + "\n  ".join(bad)


def test_lab_tooling_imports_no_demo_and_no_product_code_imports_it():
    demo = [i.where() for i in all_imports()
            if any(within(i.source, t) for t in LAB_TOOLING) and within(i.target, "dcnet.demo")]
    users = [i.where() for i in all_imports()
             if any(within(i.target, t) for t in LAB_TOOLING)
             and not any(within(i.source, p) for p in (*NOT_PRODUCT, *LAB_TOOLING))]
    assert not demo, "lab tooling imports demo code:\n  " + "\n  ".join(demo)
    assert not users, "product code imports lab tooling:\n  " + "\n  ".join(users)


def test_every_module_has_a_docstring():
    bare = [m.relpath for m in modules() if not (ast.get_docstring(m.tree) or "").strip()]
    assert not bare, "modules without a docstring:\n  " + "\n  ".join(bare)
