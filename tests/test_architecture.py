"""ARCHITECTURE.md's import rules hold: each part of the package imports only
the parts its layer allows, and no part of the package imports the programs
around it (train/, evaluate/, benchmarks/, tools/, tests/)."""

import ast
from pathlib import Path

# The checkout's package (under Bazel this file is a symlink into it, and the
# runfiles tree holds only this test's deps).
PACKAGE = Path(__file__).resolve().parents[1] / "keras_ccmim"

UTILITIES = {"losses", "masking_metrics", "file_io", "checks", "input_contract", "type_aliases", "lazy_exports"}
# What each group may import (besides itself), as ARCHITECTURE.md's table says.
ALLOWED = {
    "backend_specific": set(),
    "utilities": {"backend_specific"},
    "flops": {"backend_specific", "utilities", "layers", "models"},
    "layers": {"backend_specific", "utilities"},
    "models": {"backend_specific", "utilities", "layers"},
    "data": {"utilities"},
    "pictures": {"backend_specific", "utilities", "layers", "data"},
    "training": {"backend_specific", "utilities", "layers", "models", "data", "pictures"},
    "evaluation": {"backend_specific", "utilities", "layers", "models", "data", "pictures",
                   "training"},
    # Only the programs import "conversion": the models <-> conversion direction is one way.
    "conversion": {"backend_specific", "utilities", "layers", "models"},
    "recipes": {"training"},
    "cli": {"backend_specific", "utilities", "flops", "layers", "models", "data", "pictures",
            "training", "evaluation", "conversion"},
}


def _group(parts):
    """The layer of `keras_ccmim.<parts>` (None: the package's __init__)."""
    if not parts or parts == ["__init__"]:
        return None
    head = parts[0]
    if head.startswith("__"):  # `from keras_ccmim import __version__`
        return None
    if head in UTILITIES:
        return "utilities"
    return head


def _imports(path, module_parts):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module_parts[: len(module_parts) - node.level]
                names = [".".join(["keras_ccmim", *base, node.module or ""]).rstrip(".")]
            else:
                names = [node.module or ""]
                # `from keras_ccmim import data` imports the subpackage `data`.
                if node.module == "keras_ccmim":
                    names = [f"keras_ccmim.{alias.name}" for alias in node.names]
        else:
            continue
        yield from ((name, node.lineno) for name in names)


def test_each_layer_imports_only_what_architecture_md_allows():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        group = _group(parts)
        for name, line in _imports(path, parts[:-1] if parts[-1] != "__init__" else parts[:-1]):
            top = name.split(".")[0]
            if top in ("train", "evaluate", "benchmarks", "tools", "tests", "examples"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
            if group is None or top != "keras_ccmim":
                continue
            target = _group(name.split(".")[1:])
            if target not in (None, group) and target not in ALLOWED[group]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({group}) imports "
                             f"{name} ({target})")
    assert not wrong, "\n".join(wrong)


def _imported_modules(path, module_parts):
    """Every name an import of `path` may load: the module, and for `from M
    import x` also `M.x` (x may be a module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                module = ".".join(["keras_ccmim", *base, node.module or ""]).rstrip(".")
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_no_import_cycle_between_modules():
    """Dependencies flow one way: no module imports another that imports it
    back, directly or around a longer loop, counting the imports inside
    functions (a lazy import hides a cycle, it does not break it)."""
    modules = {
        ".".join(["keras_ccmim", *path.relative_to(PACKAGE).with_suffix("").parts]): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }
    graph = {
        name: {
            imported
            for imported in _imported_modules(path, name.split(".")[1:])
            if imported in modules and imported != name
        }
        for name, path in modules.items()
    }
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_part_of_the_package_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        group = _group(parts)
        assert group is None or group in ALLOWED, (
            f"{path}: not in any layer of ARCHITECTURE.md; add it there and to ALLOWED")


def test_architecture_md_names_every_subpackage():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    for sub in sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        assert f"keras_ccmim/{sub}/" in text, sub


def test_programs_never_import_the_tests():
    """train/, evaluate/, benchmarks/ and tools/ import the package, never
    the tests (a Bazel binary cannot depend on testonly code)."""
    root = PACKAGE.parent
    wrong = []
    for folder in ("train", "evaluate", "benchmarks", "tools"):
        for path in sorted((root / folder).rglob("*.py")):
            for name, line in _imports(path, []):
                if name.split(".")[0] == "tests":
                    wrong.append(f"{path.relative_to(root)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def _edits_sys_path(node):
    """Whether an AST node changes `sys.path` (a call of one of its methods,
    or an assignment to it or to a slice of it)."""
    def is_sys_path(expr):
        return (isinstance(expr, ast.Attribute) and expr.attr == "path"
                and isinstance(expr.value, ast.Name) and expr.value.id == "sys")

    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return is_sys_path(node.func.value)
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    for target in targets:
        if isinstance(target, ast.Subscript):
            target = target.value
        if is_sys_path(target):
            return True
    return False


def test_programs_never_edit_sys_path():
    """The programs find the package and their own shared modules through the
    install (pyproject.toml) or Bazel's runfiles, not by editing sys.path, so
    what they import is what a user's environment holds."""
    root = PACKAGE.parent
    wrong = []
    for folder in ("train", "evaluate", "benchmarks", "tools"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if _edits_sys_path(node):
                    wrong.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not wrong, "edits sys.path:\n" + "\n".join(wrong)


def test_only_the_package_is_installed():
    """The wheel installs `keras_ccmim` alone (a top-level `evaluate` would
    shadow Hugging Face's). The programs' shared code lives in the package
    (`keras_ccmim.cli`); benchmark scripts that share modules run as
    `python -m benchmarks.<name>` from the repository root."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = PACKAGE.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["keras_ccmim*"]
    for folder in ("train", "evaluate", "tools"):
        imported = [
            f"{path.relative_to(root)} imports {name}"
            for path in (root / folder).rglob("*.py")
            for name, _ in _imports(path, [])
            if name.split(".")[0] in ("train", "evaluate", "tools", "benchmarks")
        ]
        assert not imported, imported