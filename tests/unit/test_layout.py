"""The layout rules of DESIGN.md §2, measured on the source tree: one guess finds the room.

- no import cycle between phobos modules (function-local imports count; imports under
  ``if TYPE_CHECKING:`` do not),
- no private name (``_x``) imported from another module,
- modules at most 600 lines, functions at most 60,
- every exception class in ``phobos/errors.py`` or its package's own ``errors`` module,
- each verb in ``cli/<verb>.py`` (the module named after the verb registers it),
- package ``__init__`` modules say what belongs in the package and re-export nothing.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "phobos"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def imports(name: str) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every import of ``name``'s module."""
    tree = TREES[name]
    hidden = _type_checking_nodes(tree)
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((base, alias.name) for alias in node.names)


def dependencies(name: str) -> set[str]:
    found = set()
    for base, imported in imports(name):
        target = f"{base}.{imported}" if imported and f"{base}.{imported}" in MODULES else base
        if target in MODULES and target != name:
            found.add(target)
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph = {name: sorted(dependencies(name)) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(graph[node]):
                work.append((node, child + 1))
                nxt = graph[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_cycles() -> None:
    assert cycles() == []


def test_no_private_names_imported_from_other_modules() -> None:
    private = [f"{name} imports {base}.{imported}" for name in MODULES
               for base, imported in imports(name)
               if imported and re.match(r"^_[^_]", imported) and base.startswith("phobos")
               and base != name]
    assert private == []


def test_modules_are_small_enough_to_read_in_one_sitting() -> None:
    large = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: lines for n, lines in large.items() if lines > MAX_MODULE_LINES} == {}


def test_functions_are_short() -> None:
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, tree in TREES.items() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def exception_classes() -> dict[str, str]:
    """Every class of phobos that derives from an exception (name -> defining module),
    found by following base names until nothing new turns up."""
    known = {name for name in dir(builtins) if name.endswith(("Error", "Exception"))}
    known |= {"BaseException", "KeyboardInterrupt"}
    classes = [(name, node) for name, tree in TREES.items() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef)]
    found: dict[str, str] = {}
    while True:
        before = len(found)
        for module, node in classes:
            bases = {ast.unparse(base).rpartition(".")[2] for base in node.bases}
            if bases & (known | set(found)):
                found.setdefault(node.name, module)
        if len(found) == before:
            return found


def test_error_classes_live_in_errors_modules() -> None:
    misplaced = sorted(f"{module}.{name}" for name, module in exception_classes().items()
                       if module.rpartition(".")[2] != "errors")
    assert misplaced == []


def test_the_exception_finder_sees_subclasses_of_subclasses() -> None:
    found = exception_classes()
    assert found["PhobosError"] == "phobos.errors"
    assert found["HostKeyChanged"] == "phobos.tools.errors"  # via SshFailure, StepFailed


def test_package_inits_say_what_belongs_there_and_re_export_nothing() -> None:
    wrong = []
    for name, tree in TREES.items():
        if MODULES[name].name != "__init__.py":
            continue
        if ast.get_docstring(tree) is None:
            wrong.append(f"{name}: no docstring")
        wrong += [f"{name}: re-exports {ast.unparse(node)}" for node in tree.body
                  if isinstance(node, ast.ImportFrom) and (node.level or (
                      node.module or "").startswith(name + "."))]
    assert wrong == []


@pytest.mark.parametrize("verb", sorted(
    p.stem for p in (PACKAGE / "cli").glob("*.py") if p.stem not in ("__init__", "common",
                                                                      "parser")))
def test_each_cli_module_registers_the_verb_it_is_named_after(verb: str) -> None:
    text = (PACKAGE / "cli" / f"{verb}.py").read_text()
    assert re.search(rf'verb\(\s*verbs,\s*"{verb}"', text), f"cli/{verb}.py registers no {verb!r}"


def test_test_files_have_unique_names_across_suites() -> None:
    # pytest imports test files by basename (the suites are not packages), so two
    # suites holding the same name stop the whole run at collection.
    tests = SRC.parent / "tests"
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(tests)} and {path.relative_to(tests)}")
        seen.setdefault(path.name, path)
    assert not clashes, clashes
