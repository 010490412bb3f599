"""The direction of imports is the architecture: no module of gifcli imports a module that
(directly or not) imports it back. Every import counts, the ones inside functions too (a deferred
import is still a dependency); only ``if TYPE_CHECKING:`` blocks, which never run, do not. Modules
loaded by name at run time (the registries' built-ins and plug-ins) are not imports."""
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


def test_no_import_circles_in_the_package():
    found = cycles(graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)
