"""Imports flow one way (SPEC section 2; the picture is in ``interactcs_gym/__init__.py``):

    core <- llm <- judges <- domains (fds, tau2) <- agents <- evaluation <- cmpo

("a <- b": b may import a). Every module of both packages is parsed with ``ast``: imports at any
depth (function-local and ``TYPE_CHECKING`` ones included) and every ``"package.module:attr"``
string literal (names loaded by string) are edges. No edge may point to a higher layer or sideways
to another domain, and the module graph has no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interactcs_gym", "cmpo")

#: Layer of each package prefix (longest prefix wins); same number = same layer.
LAYERS: dict[str, int] = {
    "interactcs_gym": 0, "interactcs_gym.registry": 0, "interactcs_gym.core": 0,
    "interactcs_gym.llm": 1,
    "interactcs_gym.judges": 2,
    "interactcs_gym.fds": 3, "interactcs_gym.tau2": 3,
    "interactcs_gym.agents": 4,
    "interactcs_gym.evaluation": 5, "interactcs_gym.evaluate": 5,
    "cmpo": 6,
}
#: The level of the domains, which may not import one another.
DOMAINS = 3
_STRING_NAME = re.compile(r"^((?:interactcs_gym|cmpo)(?:\.\w+)*):\w+$")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the two packages that ``source`` (module ``name``) imports or names by string."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _STRING_NAME.match(node.value)
            if m:
                out.add(m.group(1))
    return {m for m in out if m.split(".")[0] in PACKAGES}


def layer_of(module: str) -> tuple[str, int]:
    """(the layer prefix, its level) of a module."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def bad_edges(graph: dict[str, set[str]]) -> list[str]:
    """Edges that point up a layer or sideways from one domain to another."""
    found = []
    for src, targets in sorted(graph.items()):
        src_group, src_level = layer_of(src)
        for dst in sorted(targets):
            dst_group, dst_level = layer_of(dst)
            if dst_level > src_level or (dst_level == src_level == DOMAINS and dst_group != src_group):
                found.append(f"{src} -> {dst} ({src_group} may not import {dst_group})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
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
    return found


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    known = {module_name(p) for p in files}
    graph = {}
    for path in files:
        name = module_name(path)
        targets = imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        # A package's parent __init__ runs first anyway; an edge to it says nothing.
        graph[name] = {t for t in targets if t != name and t in known and not name.startswith(t + ".")}
    return graph


def test_imports_flow_one_way():
    graph = project_graph()
    assert len(graph) > 50 and any(graph.values())
    assert bad_edges(graph) == []
    assert cycles(graph) == []


def test_every_module_has_a_layer():
    for module in project_graph():
        layer_of(module)  # raises ValueError (max of nothing) for a module outside every layer


# ---------------------------------------------------------------------- the checker itself
KNOWN = {"interactcs_gym.judges.rule", "interactcs_gym.fds.sop", "interactcs_gym.tau2.env",
         "interactcs_gym.core.env", "interactcs_gym.fds", "interactcs_gym.fds.env"}


@pytest.mark.parametrize("source, edge", [
    ("from interactcs_gym.fds.sop import LATE_THRESHOLD_MIN", "interactcs_gym.fds.sop"),
    ("def f():\n    import interactcs_gym.fds.sop\n", "interactcs_gym.fds.sop"),
    ("X = {'sop': 'interactcs_gym.fds.sop:sop_remedy'}", "interactcs_gym.fds.sop"),
    ("from interactcs_gym.fds import sop", "interactcs_gym.fds.sop"),
    ("from interactcs_gym.fds import env_id", "interactcs_gym.fds"),
])
def test_checker_sees_every_kind_of_import(source, edge):
    assert edge in imports_of(source, "interactcs_gym.judges.rule", False, KNOWN)


def test_checker_resolves_relative_imports():
    assert imports_of("from .sop import x", "interactcs_gym.fds.env", False, KNOWN) == {"interactcs_gym.fds.sop"}
    assert imports_of("from . import sop", "interactcs_gym.fds", True, KNOWN) == {"interactcs_gym.fds.sop"}


def test_checker_rejects_upward_sideways_and_cyclic_edges():
    assert bad_edges({"interactcs_gym.judges.rule": {"interactcs_gym.fds.sop"}}) == [
        "interactcs_gym.judges.rule -> interactcs_gym.fds.sop (interactcs_gym.judges may not import "
        "interactcs_gym.fds)"]
    assert len(bad_edges({"interactcs_gym.tau2.env": {"interactcs_gym.fds.sop"}})) == 1
    assert bad_edges({"interactcs_gym.fds.env": {"interactcs_gym.core.env", "interactcs_gym.fds.sop"}}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
