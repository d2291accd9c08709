"""The shape of the code: no import cycles and no module over 600 lines in `workbench`
and `server`, and `workbench` imports `server` only to start a server process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workbench", "server")
MAX_LINES = 600

# Imports made inside a function that close a cycle on purpose (importer, imported):
# `Transcript.save` is a convenience over the writers of `formats`, which read and write
# transcripts and so import the types.
DEFERRED_EDGES = {("workbench.engine.transcript", "workbench.engine.formats")}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, deferred) for each import of a module of `modules` made by
    `name`: deferred when made inside a function; `if TYPE_CHECKING:` blocks skipped."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def resolve(target: str) -> str | None:
        while target and target not in modules:  # `from pkg import module` or a name in it
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, deferred)
                continue
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                targets = [f"{module}.{alias.name}" for alias in child.names] or [module]
            else:
                visit(child, inner)
                continue
            for target in targets:
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    found.append((resolved, deferred))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, deferred in _imports(name, path, modules):
            if not (deferred and (name, target) in DEFERRED_EDGES):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_walk_sees_the_packages() -> None:
    graph = _graph()
    assert "workbench.engine.pipeline" in graph and "server.app" in graph
    assert "workbench.engine.transcript" in graph["workbench.engine.pipeline"]
    assert "workbench.engine.config" in graph["server.app"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = _modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concept"


def test_workbench_imports_server_only_to_start_it() -> None:
    graph = _graph()
    users = sorted(name for name, targets in graph.items()
                   if name.startswith("workbench") and any(t.startswith("server") for t in targets))
    assert users == []


def test_the_server_imports_no_model_library_module() -> None:
    """The server checks configurations without torch: it imports only the torch-free
    parts of the engine (a run's models load in worker processes)."""
    graph = _graph()
    allowed = {"workbench", "workbench.engine", "workbench.engine.audio", "workbench.engine.config",
               "workbench.engine.formats", "workbench.engine.transcript",
               "workbench.engine.rendition",  # PyAV (FFmpeg) only
               "workbench.engine.durable",  # the standard library only
               "workbench.engine.pipeline",  # worker.py, inside the worker process
               "workbench.engine.asr", "workbench.engine.asr.models"}  # (the same)
    used = {t for name, targets in graph.items() if name.startswith("server")
            and name != LIVE_WORKER for t in targets if t.startswith("workbench")}
    assert used <= allowed, used - allowed


LIVE_WORKER = "server.live_worker"


def test_the_server_uses_the_live_room_only_inside_the_live_worker() -> None:
    """`workbench.live` (torch, faster-whisper) is imported by server.live_worker alone,
    and only inside functions (its process), so importing the module (the server does, to
    name the process's entry point) loads no model library."""
    modules = _modules()
    live = {"workbench.live"} | {m for m in modules if m.startswith("workbench.live.")}
    users = {name for name, targets in _graph().items()
             if name.startswith("server") and targets & live}
    assert users == {LIVE_WORKER}
    edges = _imports(LIVE_WORKER, modules[LIVE_WORKER], modules)
    top = {t for t, deferred in edges if not deferred and t.startswith("workbench")}
    assert top <= {"workbench.engine.audio", "workbench.engine.durable"}, top
