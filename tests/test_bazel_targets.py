"""Every Python file has a Bazel target, and the BUILD files are up to date.

Needs no Bazel: it reads the BUILD files as text and reruns the generator
(tools/bazel/generate_build.py) in check mode. Fix a failure with
`python tools/bazel/generate_build.py`.
"""

import ast
import importlib.util
import os

import pytest

ROOTS = ("keras_ccmim", "train", "evaluate", "tools", "tests")
# Folders whose BUILD the generator does not write (its STATIC_BUILDS).
HAND_WRITTEN = ("tools/bazel",)


def _repo_root():
    # Under Bazel this file is a symlink in the runfiles tree; the real file
    # sits in the checkout, which is what this test inspects.
    path = os.path.dirname(os.path.realpath(__file__))
    while path != os.path.dirname(path):
        if os.path.exists(os.path.join(path, "WORKSPACE")):
            return path
        path = os.path.dirname(path)
    pytest.fail("no WORKSPACE above %s" % os.path.realpath(__file__))


REPO = _repo_root()


def _load_generator():
    path = os.path.join(REPO, "tools", "bazel", "generate_build.py")
    spec = importlib.util.spec_from_file_location("generate_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_files():
    found = []
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, root)):
            rel = os.path.relpath(dirpath, REPO).replace(os.sep, "/")
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                and rel + "/" + d not in HAND_WRITTEN
            ]
            found += [
                os.path.relpath(os.path.join(dirpath, f), REPO).replace(os.sep, "/")
                for f in filenames
                if f.endswith(".py") and not f.startswith(".")
            ]
    return sorted(found)


def _srcs_in_build(build_path):
    """The string entries of every `srcs = [...]` in a BUILD file."""
    with open(build_path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=build_path)
    srcs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "srcs":
            if isinstance(node.value, ast.List):
                srcs.update(
                    e.value for e in node.value.elts if isinstance(e, ast.Constant)
                )
    return srcs


def _owning_build(relpath):
    """The BUILD file of the nearest enclosing package, or None."""
    path = os.path.dirname(relpath)
    while path:
        if os.path.exists(os.path.join(REPO, path, "BUILD")):
            return path
        path = os.path.dirname(path)
    return None


def test_every_python_file_is_in_a_build_target():
    missing = []
    cache = {}
    for relpath in _python_files():
        package = _owning_build(relpath)
        if package is None:
            missing.append("%s (no BUILD file above it)" % relpath)
            continue
        if package not in cache:
            cache[package] = _srcs_in_build(os.path.join(REPO, package, "BUILD"))
        if os.path.relpath(relpath, package).replace(os.sep, "/") not in cache[package]:
            missing.append("%s (not in %s/BUILD)" % (relpath, package))
    assert not missing, (
        "Python files without a Bazel target; run "
        "`python tools/bazel/generate_build.py`:\n  " + "\n  ".join(missing)
    )


def test_build_files_are_up_to_date():
    problems = _load_generator().check(REPO)
    assert not problems, (
        "BUILD files differ from what tools/bazel/generate_build.py writes; "
        "run `python tools/bazel/generate_build.py`:\n  " + "\n  ".join(problems)
    )


@pytest.mark.parametrize("deferred", [False, True])
def test_generator_refuses_a_module_that_imports_a_test_file(tmp_path, deferred):
    # A test target cannot be a dep, so such an import passes under pytest
    # and fails under Bazel (ModuleNotFoundError); the generator says so.
    (tmp_path / "WORKSPACE").write_text("")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "__init__.py").write_text("")
    (tests / "test_a.py").write_text("def helper():\n    return 1\n")
    body = "from tests.test_a import helper\n"
    if deferred:
        body = "def test_b():\n    " + body
    (tests / "test_b.py").write_text(body)
    problems = _load_generator().check(str(tmp_path))
    assert len(problems) == 1
    assert "tests/test_b.py imports tests/test_a.py" in problems[0]
    assert "helper module" in problems[0]
