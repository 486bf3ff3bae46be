"""The package's floor plan, read from its own imports (`ast`), as STYLE.md gives it.

- imports run one way: each module imports only from the layers below its own
  (`LAYERS`, top to bottom), so no circle can form; a circle is also looked for on
  its own, and every module must have its place in the order;
- no module imports another module of the package inside a function (the way a
  circle is hidden);
- `crypto/` imports neither Quart nor the package outside `crypto/` nor `settings`:
  its rules take settings as arguments;
- no module passes `MAX_LINES`.

The checks are functions of a source folder, so the controls at the end can show each
one failing on a small package made to break it.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.processes import PROJECT_ROOT

PACKAGE = "quart_auth_api"

#: Top to bottom: a module imports only modules of the layers below its own. This is
#: STYLE.md's order ("Imports run one way"), with two refinements it leaves open: a
#: blueprint's module sits below the blueprint list, and within `crypto/` the tokens
#: module sits on the key set.
LAYERS: list[set[str]] = [
    {"__init__"},
    {"blueprints"},
    {"blueprints.*"},
    {"docs"},
    {"guards"},
    {"transport", "ratelimit", "cli", "cli_users", "migrate"},
    {"services.accounts", "services.users", "services.mfa"},
    {"services.sessions", "services.links", "services.outbox", "schemas_account", "schemas_mfa"},
    {"mail", "schemas", "hooks", "logs"},
    {"models"},
    {"errors"},
    {"audit"},
    {"client", "db", "metrics"},
    {"statements_postgres"},
    {"extensions", "_version", "statements"},
    {"crypto.tokens"},
    {"crypto.keys", "crypto.passwords", "crypto.digests", "crypto.totp", "crypto.sealing"},
]
#: Packages whose `__init__` only documents the folder: they import nothing.
FOLDERS = {"crypto", "services"}
#: What `crypto/` must never import (beyond the package outside `crypto/`).
NOT_IN_CRYPTO = ("quart", "quart_schema", "quart_cors", "werkzeug", "settings")
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a module of the package, or the top-level name of another one
    line: int
    in_function: bool


def modules(root: Path) -> dict[str, Path]:
    """`{"db": .../db.py, "crypto.keys": ..., "__init__": .../__init__.py}`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _package_of(name: str, path: Path) -> list[str]:
    """The package a module's relative imports start from."""
    parts = [] if name == "__init__" else name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def imports(root: Path) -> Iterator[Import]:
    known = modules(root)
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        functions = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            in_function = id(node) in functions
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield _resolve(name, alias.name.split("."), [], known, node, in_function)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(name, path)[: len(_package_of(name, path)) - node.level + 1]
                    target = [*base, *(node.module.split(".") if node.module else [])]
                    yield from _from(name, [PACKAGE, *target], node, known, in_function)
                else:
                    yield from _from(name, (node.module or "").split("."), node, known, in_function)


def _from(
    name: str, target: list[str], node: ast.ImportFrom, known: dict[str, Path], in_function: bool
) -> Iterator[Import]:
    for alias in node.names:  # `from . import db` names a module, `from .db import x` not
        yield _resolve(name, target, [alias.name], known, node, in_function)


def _resolve(
    name: str,
    target: list[str],
    member: list[str],
    known: dict[str, Path],
    node: ast.stmt,
    in_function: bool,
) -> Import:
    if target[0] != PACKAGE:
        return Import(name, target[0], node.lineno, in_function)
    inner = target[1:]
    candidate = ".".join([*inner, *member])
    module = candidate if candidate in known else ".".join(inner) or "__init__"
    return Import(name, f"{PACKAGE}:{module}", node.lineno, in_function)


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module in layer or (module.count(".") and module.rsplit(".", 1)[0] + ".*" in layer):
            return index
    return None


def problems(root: Path) -> list[str]:
    """Every way the package at `root` breaks the floor plan, one line each."""
    found: list[str] = []
    edges: dict[str, set[str]] = {name: set() for name in modules(root)}
    for item in imports(root):
        inside = item.imported.startswith(f"{PACKAGE}:")
        imported = item.imported.removeprefix(f"{PACKAGE}:")
        where = f"{item.importer}:{item.line}"
        if item.importer.split(".")[0] == "crypto" and item.importer not in FOLDERS:
            if inside and imported.split(".")[0] != "crypto":
                found.append(f"{where}: crypto imports the package ({imported})")
            if not inside and item.imported in NOT_IN_CRYPTO:
                found.append(f"{where}: crypto imports {item.imported}")
        if not inside:
            continue
        edges[item.importer].add(imported)
        if item.in_function:
            found.append(f"{where}: imports {imported} inside a function")
        if item.importer in FOLDERS:
            found.append(f"{where}: the folder's __init__ imports {imported}")
            continue
        above, below = layer_of(item.importer), layer_of(imported)
        if above is not None and below is not None and below <= above:
            found.append(f"{where}: imports {imported}, which is not below it in the order")
    for name in edges:
        if name not in FOLDERS and layer_of(name) is None:
            found.append(f"{name}: has no place in the order (LAYERS)")
    found += [f"circle: {' -> '.join(circle)}" for circle in circles(edges)]
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(edges.get(name, ())):
            if state.get(other) == "open":
                found.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return found


def long_modules(paths: list[Path]) -> list[str]:
    return [
        f"{path.relative_to(PROJECT_ROOT)}: {count} lines"
        for path in paths
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    ]


# -- the project -------------------------------------------------------------------------


def test_the_package_keeps_to_its_floor_plan():
    assert problems(PROJECT_ROOT / PACKAGE) == []


def test_every_module_has_its_place_and_the_plan_lists_no_stray_names():
    placed = {name for layer in LAYERS for name in layer}
    written = set(modules(PROJECT_ROOT / PACKAGE)) - FOLDERS
    assert all(layer_of(name) is not None for name in written)
    # every stage of STYLE.md is written: the plan names nothing that does not exist
    assert placed - written - {"blueprints.*"} == set()


def test_no_module_passes_the_line_limit():
    paths = [
        *(PROJECT_ROOT / PACKAGE).rglob("*.py"),
        *(PROJECT_ROOT / "bench").glob("*.py"),
        *(PROJECT_ROOT / "tests").rglob("*.py"),
        *(PROJECT_ROOT / "scripts").glob("*.py"),
        PROJECT_ROOT / "run.py",
        PROJECT_ROOT / "settings.py",
        PROJECT_ROOT / "production_checks.py",
    ]
    assert long_modules(paths) == []


# -- controls: each check fails on a package made to break it ----------------------------


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_control_an_import_up_the_order_is_found(tmp_path):
    root = package(tmp_path, {"db.py": "from .errors import ApiError\n", "errors.py": ""})
    assert problems(root) == ["db:1: imports errors, which is not below it in the order"]


def test_control_a_circle_is_found(tmp_path):
    root = package(
        tmp_path, {"db.py": "from . import metrics\n", "metrics.py": "from .db import x\n"}
    )
    found = problems(root)
    assert "circle: db -> metrics -> db" in found


def test_control_an_import_inside_a_function_is_found(tmp_path):
    source = """
        def late():
            from .db import get_db
            return get_db
    """
    root = package(tmp_path, {"errors.py": source, "db.py": ""})
    assert problems(root) == ["errors:3: imports db inside a function"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from quart import current_app\n", "crypto.keys:1: crypto imports quart"),
        ("from settings import Settings\n", "crypto.keys:1: crypto imports settings"),
        ("from ..db import get_db\n", "crypto.keys:1: crypto imports the package (db)"),
    ],
)
def test_control_crypto_importing_quart_settings_or_the_package_is_found(
    tmp_path, source, expected
):
    root = package(tmp_path, {"crypto/__init__.py": "", "crypto/keys.py": source, "db.py": ""})
    assert expected in problems(root)


def test_control_a_module_without_a_place_is_found(tmp_path):
    root = package(tmp_path, {"helpers.py": ""})
    assert problems(root) == ["helpers: has no place in the order (LAYERS)"]


def test_control_a_long_module_is_found(tmp_path):
    path = PROJECT_ROOT / "tests" / "data" / "openapi-hmac.json"  # long, and not a module
    assert long_modules([path]) == [
        f"tests/data/openapi-hmac.json: {len(path.read_text().splitlines())} lines"
    ]
