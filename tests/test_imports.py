"""The package's import graph has no cycle: data flows config -> objects -> loop -> files, and
commands sit on top. Every import counts, also those inside functions."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from ddpm.x import y`` names ddpm.x.y when
    that is a module, else ddpm.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if name in modules:
                found.add(name)
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    edges = graph()
    assert "ddpm.training.loop" in edges["ddpm.run"]  # the graph sees real imports


# The product's interface: python -m ddpm.<command> (and the console scripts). Everything else
# is library, in subpackages named for what they hold; only errors.py sits beside the commands,
# since every layer raises its UserError.
COMMANDS = {
    "ddpm.run",
    "ddpm.sample",
    "ddpm.denoise",
    "ddpm.compare",
    "ddpm.bench",
    "ddpm.search",
    "ddpm.plan",
    "ddpm.distill",
    "ddpm.evaluate.command",
    "ddpm.evaluate.build",
    "ddpm.evaluate.__main__",
}


def test_the_top_of_the_package_holds_the_commands_and_nothing_else():
    top = {f"ddpm.{p.stem}" for p in PACKAGE.glob("*.py")} - {"ddpm.__init__"}
    assert top == {c for c in COMMANDS if c.count(".") == 1} | {"ddpm.errors"}


def test_the_library_never_imports_a_command():
    edges = graph()
    assert set(edges) | {"ddpm.evaluate.__main__"} >= COMMANDS
    offenders = {m: edges[m] & COMMANDS for m in edges if m not in COMMANDS and edges[m] & COMMANDS}
    assert offenders == {}


def test_every_key_value_error_is_raised_through_require():
    """``key=value: allowed`` messages have one maker, ``errors.require``/``fail``; a
    ``raise UserError(f"key={...}...")`` written by hand is refused. (Errors that name a file
    or relay Hydra's own text keep their shape.)"""
    hand_made = re.compile(r'raise UserError\(\s*f"(\{\w+\}|[\w./]+)=\{')
    found = [
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*.py")
        if p.name != "errors.py" and hand_made.search(p.read_text())
    ]
    assert found == []
