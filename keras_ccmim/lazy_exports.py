"""Public names of a package that load on first use (PEP 562).

`keras_ccmim.data` and `keras_ccmim.evaluation` hold modules that import
TensorFlow next to modules that must not (the GPU machine has JAX and torch
only). Their `__init__` lists the public names once, as imports under
`if TYPE_CHECKING:` (which type checkers and the Bazel BUILD generator read),
and ends with

    __getattr__, __dir__, __all__ = lazy_exports(__name__)

so that each name is imported from its module when it is first used.
Hand-written because Python's `importlib.util.LazyLoader` defers whole
modules, not the names a package re-exports.
"""

import ast
import importlib
import sys
import types


def _homes(path):
    """{name: module} of the imports under `if TYPE_CHECKING:` in `path`."""
    with open(path) as f:
        tree = ast.parse(f.read())
    (block,) = [node for node in tree.body
                if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    return {alias.asname or alias.name: node.module
            for node in block.body for alias in node.names}


class _LazyPackage(types.ModuleType):
    """A package whose public names load lazily. When a submodule that
    shares a public function's name loads (`evaluation.finetune`), the
    import system sets the package's attribute to the module; the function
    is bound instead, as an eager import would have left it."""

    def __setattr__(self, name, value):
        home = self.__dict__.get("_lazy_homes", {})
        if isinstance(value, types.ModuleType) and home.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(module_name):
    """`(__getattr__, __dir__, __all__)` for package `module_name`, whose
    public names are the imports under `if TYPE_CHECKING:` in its
    `__init__`."""
    module = sys.modules[module_name]
    homes = _homes(module.__file__)
    module.__class__ = _LazyPackage
    module._lazy_homes = homes

    def __getattr__(name):
        if name not in homes:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        setattr(module, name, value)
        return value

    def __dir__():
        return sorted(set(module.__dict__) | set(homes))

    return __getattr__, __dir__, sorted(homes)
