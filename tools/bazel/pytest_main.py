"""Runs one pytest file inside a Bazel test: the main of keras_backend_py_test.

Usage (Bazel passes the file, relative to the runfiles root, which is the
working directory of a test): pytest_main.py tests/test_foo.py [pytest args]
"""

import os
import sys


def _import_from_runfiles_only():
    """Drops the editable install's finder so project code comes from runfiles.

    `pip install -e .` appends a finder that maps `keras_ccmim.*` to the source
    tree. Bazel puts the runfiles tree first on sys.path, so it already wins;
    without this, a module missing from a target's deps would still be found
    in the source tree and the missing dep would go unnoticed.
    """
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not getattr(finder, "__module__", "").startswith("__editable__")
    ]


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: %s TEST_FILE [PYTEST_ARGS...]" % argv[0])
    # The runfiles tree is read-only inside the sandbox and links to the sources.
    sys.dont_write_bytecode = True
    tmpdir = os.environ.get("TEST_TMPDIR")
    if tmpdir:
        os.environ.setdefault("HOME", tmpdir)
        os.environ.setdefault("KERAS_HOME", os.path.join(tmpdir, ".keras"))
    _import_from_runfiles_only()

    import pytest  # pylint: disable=g-import-not-at-top

    args = [argv[1], "-q", "-p", "no:cacheprovider"] + argv[2:]
    xml_output = os.environ.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append("--junitxml=" + xml_output)
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
