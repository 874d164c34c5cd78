"""The house rules, checked on the source tree: the core names no vendor family, its modules import each other
without cycles (lazy imports inside functions count too), and the README's "Layout" section is the real tree."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "src" / "hwdeploy"
VENDOR_WORDS = re.compile(r"\b(ascend|cambricon|arm|webgl|nvidia)\b", re.IGNORECASE)


def core_files():
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The hwdeploy modules ``path`` imports, anywhere in the file (module level or inside functions)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from hwdeploy.sdk import cache" imports the module hwdeploy.sdk.cache
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "hwdeploy":  # the package itself: its __init__ only re-exports
                found.add(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (never executed, so never an import cycle)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", getattr(child.test, "attr", "")) == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_the_core_names_no_vendor_family_and_no_plugin():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in core_files()
            for n, line in enumerate(p.read_text().splitlines(), 1) if VENDOR_WORDS.search(line)]
    assert not hits, "\n".join(hits)


def test_core_modules_import_without_cycles():
    known = {module_name(p) for p in core_files()}
    graph = {module_name(p): imports_of(p, known) - {module_name(p)} for p in core_files()}
    assert graph["hwdeploy.fastest"] and "hwdeploy.api" not in graph["hwdeploy.fastest"]
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():  # the check above must be able to fail
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_layers_point_one_way():
    """The plugin contract never imports the user API; the SDK never imports the user API either."""
    known = {module_name(p) for p in core_files()}
    user_api = {"hwdeploy.api", "hwdeploy.cli", "hwdeploy.fastest", "hwdeploy.selection", "hwdeploy.zoo"}
    for path in core_files():
        name = module_name(path)
        if name.startswith(("hwdeploy.contract", "hwdeploy.sdk")):
            assert not imports_of(path, known) & user_api, name


def readme_layout() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines()[1:] if line.strip() and not line.startswith(" ")]


def test_readme_layout_matches_the_tree():
    listed = readme_layout()
    assert listed, "the README has no Layout block"
    missing = [entry for entry in listed if not (ROOT / entry).exists()]
    assert not missing, f"README Layout lists paths that do not exist: {missing}"
    # Every core module and every plugin package is in the Layout.
    core_modules = {str(p.relative_to(ROOT)) for p in core_files() if p.name != "__init__.py"}
    plugins = {f"plugins/{p.name}/" for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists()}
    unlisted = sorted((core_modules | plugins) - {entry.rstrip("/") if entry.endswith(".py") else entry for entry in listed})
    assert not unlisted, f"README Layout does not mention: {unlisted}"


@pytest.mark.parametrize("module", ["hwdeploy.contract.hookspecs", "hwdeploy.contract.manager", "hwdeploy.sdk.isolation"])
def test_no_sys_path_inserts_in_the_core(module):
    path = CORE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    assert "sys.path.insert" not in path.read_text()
