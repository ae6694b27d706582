"""docs/design.md's "Which module does what" table says what each module imports from nocompile.

The last column must be exactly the module's run-time imports from the package (top-level and
inside functions; ``if TYPE_CHECKING:`` blocks left out, as the table's text says), every module
of the package must have a row, and a module may import only modules of rows above its own (or
of its own row, where one row covers several modules).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nocompile"
DESIGN = ROOT / "docs" / "design.md"

_MODULE = re.compile(r"`(\w+)\.(?:py|c)`")
_IMPORTED = re.compile(r"`(\w+)`")


def table_rows(text: str) -> list[tuple[list[str], set[str]]]:
    """``(modules, imports)`` of each row of the table, in order."""
    section = text.split("## Which module does what", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, separator, *body = rows
    if not (header.startswith("| module |") and set(separator) <= set("|-")):
        raise AssertionError(f"unexpected table head in docs/design.md: {header!r}")
    parsed = []
    for line in body:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        modules = _MODULE.findall(cells[0])
        imports = set() if cells[-1] == "—" else set(_IMPORTED.findall(cells[-1]))
        parsed.append((modules, imports))
    return parsed


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(source: str) -> set[str]:
    """The nocompile modules ``source`` imports at run time, by name (``_compat``, ``__init__``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for statement in child.orelse:
                    visit_one(statement)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import _x, _y
                found.update(alias.name for alias in node.names)
            elif node.level == 1 and node.module is not None:  # from ._x import y
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module is not None and node.module.split(".")[0] == "nocompile":
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "nocompile":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        visit(node)

    visit(ast.parse(source))
    return found


def test_runtime_imports_skip_type_checking_blocks_and_see_function_level_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _a, _b\n"
        "from ._c import thing\n"
        "import nocompile._d\n"
        "if TYPE_CHECKING:\n"
        "    from ._hidden import X\n"
        "else:\n"
        "    from ._e import y\n"
        "def f():\n"
        "    from ._f import z\n"
        "    from nocompile import compile_once\n"
    )
    assert runtime_imports(source) == {"_a", "_b", "_c", "_d", "_e", "_f", "__init__"}


ROWS = table_rows(DESIGN.read_text())
SOURCES = {path.stem: path for path in PACKAGE.glob("*.py")}


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    named = [module for modules, _ in ROWS for module in modules]
    assert len(named) == len(set(named)), "a module named in two rows"
    python_rows = {m for m in named if (PACKAGE / f"{m}.py").exists()}
    assert python_rows == set(SOURCES), f"rows without a module, or modules without a row: {python_rows ^ set(SOURCES)}"
    assert all((PACKAGE / f"{m}.py").exists() or (PACKAGE / f"{m}.c").exists() for m in named)


@pytest.mark.parametrize(("modules", "listed"), ROWS, ids=[", ".join(m) for m, _ in ROWS])
def test_the_import_column_is_what_the_modules_import(modules: list[str], listed: set[str]) -> None:
    actual: set[str] = set()
    for module in modules:
        if module in SOURCES:
            actual |= runtime_imports(SOURCES[module].read_text())
    actual -= set(modules)
    assert actual == listed, (
        f"docs/design.md lists {sorted(listed)} for {modules}; the code imports {sorted(actual)} "
        f"(missing from the table: {sorted(actual - listed)}; listed but not imported: {sorted(listed - actual)})"
    )


def test_a_module_imports_only_modules_above_it() -> None:
    above: set[str] = set()
    for modules, listed in ROWS:
        late = listed - above - set(modules)
        assert not late, f"{modules} import {sorted(late)}, which the table puts below them"
        above |= set(modules)


# -- module size and where private torch names live (issue #26) --------------------------------

#: The most lines a module of the package may have.
MAX_MODULE_LINES = 700


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_module_is_over_the_line_limit(module: str) -> None:
    lines = len(SOURCES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"nocompile/{module}.py has {lines} lines, over {MAX_MODULE_LINES}"


#: Private torch namespaces only ``_compat.py`` may name (docs/design.md, "torch versions").
PRIVATE_TORCH = ("torch._dynamo", "torch._C._dynamo", "torch._inductor", "torch._functorch")


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name (``getattr(a.b, "c")`` too), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        base = _dotted(node.args[0])
        return None if base is None else f"{base}.{node.args[1].value}"
    return None


def private_torch_names(source: str) -> set[str]:
    """The private torch names (``PRIVATE_TORCH``) ``source``'s code names: in imports, attribute
    chains and ``getattr`` calls. Comments, docstrings and other strings are not code: a message
    that tells the user about ``torch._dynamo.config`` is not a use of it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        else:
            dotted = _dotted(node)
            if dotted is not None:
                names.add(dotted)
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in PRIVATE_TORCH)}


def test_private_torch_names_are_found_in_code_only() -> None:
    source = (
        '"""Docstring: torch._dynamo is not code."""\n'
        "import torch._dynamo.config as c  # torch._inductor in a comment\n"
        "from torch._C._dynamo.guards import RootGuardManager\n"
        "from torch import _functorch\n"
        "x = torch._inductor.config\n"
        "y = getattr(torch._C, '_dynamo')\n"
        "z = 'torch._dynamo.config.disable'\n"
        "w = torch._C._len_torch_function_stack\n"
    )
    assert private_torch_names(source) == {
        "torch._dynamo.config",
        "torch._C._dynamo.guards",
        "torch._C._dynamo.guards.RootGuardManager",
        "torch._functorch",
        "torch._inductor",
        "torch._inductor.config",
        "torch._C._dynamo",
    }


@pytest.mark.parametrize("module", sorted(set(SOURCES) - {"_compat"}))
def test_only_compat_names_private_torch_namespaces(module: str) -> None:
    found = private_torch_names(SOURCES[module].read_text())
    assert not found, f"nocompile/{module}.py names {sorted(found)}: private torch names belong in _compat.py"


def test_compat_is_where_the_private_torch_names_are() -> None:
    assert private_torch_names(SOURCES["_compat"].read_text()), "the scan finds nothing even in _compat.py"


#: The most lines ``CompileState`` may have: the lifecycle of one compiled function, no more
#: (the input check is ``_inputs.InputGuard``'s).
MAX_STATE_LINES = 350


def test_compile_state_keeps_to_the_lifecycle() -> None:
    tree = ast.parse(SOURCES["_state"].read_text())
    (state,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CompileState"]
    assert state.end_lineno is not None
    lines = state.end_lineno - state.lineno + 1
    assert lines <= MAX_STATE_LINES, f"CompileState has {lines} lines, over {MAX_STATE_LINES}"
