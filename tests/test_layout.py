"""The package's layers: dependencies point one way (core <- peft <- trainer <- cli <- glue), with no import cycles.

Every import counts, also those inside functions: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import hidlr_hf

PACKAGE = Path(hidlr_hf.__file__).parent
# Lower layers never import higher ones; errors.py and files.py are shared by all.
LAYERS = {"errors": 0, "files": 0, "core": 0, "peft": 1, "trainer": 2, "cli": 3, "glue": 4}


def modules() -> dict:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("hidlr_hf",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set) -> set:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    # A submodule's own package runs first anyway; that is not a dependency of the submodule's code.
    return {t for t in found if not name.startswith(t + ".")}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else max(LAYERS.values()) + 1


def test_dependencies_point_one_way():
    known = modules()
    wrong = []
    for name, path in known.items():
        if name == "hidlr_hf":
            continue  # the lazy public API
        for target in imports_of(name, path, set(known)):
            if layer(target) > layer(name):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_import_cycles():
    known = modules()
    graph = {name: imports_of(name, path, set(known)) for name, path in known.items() if name != "hidlr_hf"}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
