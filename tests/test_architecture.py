"""The shape of the code (docs/architecture.md): dependencies point one way, no module imports another that
imports it back, no private name crosses a package, and the CLI stays a face."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
LAYERS = [
    "layers",
    "models|data",
    "train",
    "inspect|adversarial|transfer|bench|export|workflows|generative|detection|captioning",
    "serve",
    "cli|cli_spec",
]


def _imports() -> dict[str, set[str]]:
    """Module -> every cnnlab module it imports (at the top or inside functions)."""
    found = {}
    for path in (SRC / "cnnlab").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlab"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("cnnlab")}
        found[name] = deps
    return {m: {d for d in deps if d in found and d != m} for m, deps in found.items()}


def _level(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") else ""
    for level, names in enumerate(LAYERS):
        if part in names.split("|"):
            return level
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    cycles = sorted(
        {tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph[b] and not a.startswith(b + ".")}
    )
    cycles = [(a, b) for a, b in cycles if not b.startswith(a + ".")]  # a package and its own module
    assert cycles == []


def test_dependencies_point_one_way():
    wrong = []
    for module, deps in _imports().items():
        for dep in deps:
            here, there = _level(module), _level(dep)
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_no_private_name_crosses_a_package():
    crossing = []
    for module, deps in _imports().items():
        package = module.split(".")[1] if module.count(".") else ""
        for dep in deps:
            parts = dep.split(".")
            private = [p for p in parts[1:] if p.startswith("_") and p != "__version__"]
            if private and parts[1] != package:
                crossing.append(f"{module} -> {dep}")
    assert crossing == []


def test_the_cli_is_a_face():
    tree = ast.parse((SRC / "cnnlab" / "cli.py").read_text())
    lines = (SRC / "cnnlab" / "cli.py").read_text().count("\n")
    longest = max(n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert lines < 600 and longest <= 80
