"""The direction of imports is the architecture: no module of gifcli imports a module that
(directly or not) imports it back. Every import counts, the ones inside functions too (a deferred
import is still a dependency), and so do modules loaded by name at run time
(``importlib.import_module("gifcli.methods")``, and ``f"{__name__}.{name}"``: every module of the
package); only ``if TYPE_CHECKING:`` blocks, which never run, do not.

One circle is the design: the method registry (``gifcli.core.methods``) loads the built-in methods
the first time a name is looked up, and they register themselves with it. Through that seam
nothing above the core may run: a method reaches no pipeline, command or API module."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gifcli"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The modules an ``from X import a, b`` may load: X, and X.a, X.b where those are modules."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = current.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def loaded_by_name(call: ast.Call, current: str, is_package: bool, modules: set[str]) -> set[str]:
    """What ``importlib.import_module(...)`` loads: a literal name, or every module of this package
    for ``f"{__name__}.{...}"`` / ``f"{__package__}.{...}"``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name != "import_module" or not call.args:
        return set()
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.FormattedValue):
        head = ast.unparse(arg.values[0].value)
        package = current if (head == "__name__" and is_package) else current.rpartition(".")[0] \
            if head in ("__name__", "__package__") else None
        if package is not None:
            return {m for m in modules if m.rpartition(".")[0] == package}
    return set()


def imports_of(path: Path, modules: set[str], name: str = "") -> set[str]:
    current, is_package = name or module_name(path), path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(resolve(current, is_package, node))
        elif isinstance(node, ast.Call):
            found.update(loaded_by_name(node, current, is_package, modules))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != current}


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per back edge of a depth-first walk (none found: the graph has no circle)."""
    found, state, stack = [], {}, []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif state.get(nxt) is None:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node)
    return found


def test_the_walk_finds_a_planted_circle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    deferred = tmp_path / "m.py"
    deferred.write_text("def f():\n    from gifcli import x\n\nif TYPE_CHECKING:\n    import gifcli.y\n")
    assert imports_of(deferred, {"gifcli", "gifcli.x", "gifcli.y"}, "gifcli.m") == {"gifcli", "gifcli.x"}


ABOVE_THE_CORE = ("gifcli.pipelines", "gifcli.cli", "gifcli.api", "gifcli.entry")
REGISTRY_SEAM = ("gifcli.core.methods", "gifcli.methods")


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_walk_follows_modules_loaded_by_name(tmp_path):
    pkg = tmp_path / "__init__.py"
    pkg.write_text("import importlib\nfor n in names:\n    importlib.import_module(f'{__name__}.{n}')\n")
    mods = {"gifcli.p", "gifcli.p.a", "gifcli.p.b", "gifcli.p.a.deep", "gifcli.q"}
    assert imports_of(pkg, mods, "gifcli.p") == {"gifcli.p.a", "gifcli.p.b"}
    lit = tmp_path / "m.py"
    lit.write_text("def load():\n    import importlib\n    importlib.import_module('gifcli.q')\n")
    assert imports_of(lit, mods, "gifcli.p.m") == {"gifcli.q"}


def test_no_import_circles_in_the_package():
    edges = graph()
    assert "gifcli.methods" in edges["gifcli.core.methods"], "the registry's load of the built-ins is not followed"
    found = [c for c in cycles(edges)
             if not all(m.startswith(REGISTRY_SEAM) or not m.startswith(ABOVE_THE_CORE) for m in c)
             or not any(m == "gifcli.core.methods" for m in c)]
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_nothing_above_the_core_runs_through_the_method_registry():
    """The registry loads the methods; what they import (transitively) is the core and below."""
    above = sorted(m for m in reachable(graph(), "gifcli.methods") if m.startswith(ABOVE_THE_CORE))
    assert not above, f"the methods reach {', '.join(above)}"
