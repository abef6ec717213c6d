"""keras_backend_py_test: one pytest file, one py_test per Keras backend."""

BACKENDS = ["tensorflow", "jax", "torch"]

_PYTEST_MAIN = "//tools/bazel:pytest_main.py"

def keras_backend_py_test(
        name,
        srcs,
        deps = [],
        data = [],
        backends = BACKENDS,
        args = [],
        env = {},
        tags = [],
        size = "medium",
        timeout = "long",
        **kwargs):
    """Runs one pytest file once per Keras backend.

    Creates `<name>_<backend>` py_tests, each with KERAS_BACKEND=<backend> in
    its environment and tagged <backend>, plus a test_suite `<name>` over them.
    The tests' main is tools/bazel/pytest_main.py, which runs pytest on the file.

    Args:
      name: base name of the targets.
      srcs: a list holding the one pytest file, in this package.
      deps: py_library targets the test imports (conftest.py included).
      data: files the test reads.
      backends: backends to run under (default: tensorflow, jax, torch).
      args: extra pytest arguments.
      env: extra environment variables.
      tags: tags for every test; each also gets its backend's tag.
      size: test size (resources Bazel reserves).
      timeout: test timeout; "long" (900 s) covers importing TF, JAX and torch.
      **kwargs: passed to every py_test (e.g. shard_count, flaky).
    """
    if len(srcs) != 1:
        fail("keras_backend_py_test takes exactly one pytest file in srcs, got %s" % srcs)
    src = srcs[0]
    package = native.package_name()
    path = package + "/" + src if package else src
    tests = []
    for backend in backends:
        if backend not in BACKENDS:
            fail("unknown Keras backend %r; expected one of %s" % (backend, BACKENDS))
        test_env = dict(env)
        test_env["KERAS_BACKEND"] = backend
        native.py_test(
            name = "%s_%s" % (name, backend),
            srcs = [src, _PYTEST_MAIN],
            main = _PYTEST_MAIN,
            args = [path] + args,
            data = data + ["//:pyproject.toml"],
            deps = deps,
            env = test_env,
            tags = tags + [backend],
            size = size,
            timeout = timeout,
            python_version = "PY3",
            srcs_version = "PY3",
            legacy_create_init = False,
            **kwargs
        )
        tests.append(":%s_%s" % (name, backend))
    native.test_suite(name = name, tests = tests)
