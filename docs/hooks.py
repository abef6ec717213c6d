"""MkDocs hooks: the pages that are written in the code are generated from it.

Markers in a page's Markdown are replaced before it is rendered:

    <!-- config-fields -->         the table of every `PretrainConfig` field
                                   (`keras_ccmim.training.config.describe_fields`)
    <!-- api: keras_ccmim.data --> one mkdocstrings block per name that the
                                   package's `__init__` imports from its own
                                   modules, in import order
    <!-- programs -->              each console script of pyproject.toml
                                   with its program's docstring

Figures stay where the benchmarks write them (`benchmarks/results/`): the
site copies the PNGs to `figures/`, and a page's links to them (relative to
the page in the repository, so they work when browsing it too) are pointed
there.

Only the field table imports the package (on the numpy backend unless
`KERAS_BACKEND` says otherwise, so the build needs no TensorFlow); the API
reference is read statically by griffe.
"""

import ast
import os
import posixpath
import re
import sys

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES_SOURCE = "benchmarks/results"
FIGURES_SITE = "figures"

_API = re.compile(r"<!-- api: ([\w.]+) -->")
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def on_files(files, config):
    for folder, _, names in os.walk(os.path.join(ROOT, FIGURES_SOURCE)):
        for name in sorted(names):
            if name.endswith(".png"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.join(ROOT, FIGURES_SOURCE))
                uri = posixpath.join(FIGURES_SITE, *relative.split(os.sep))
                files.append(File.generated(config, uri, abs_src_path=path))
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- config-fields -->" in markdown:
        markdown = markdown.replace("<!-- config-fields -->", _config_fields())
    markdown = _API.sub(lambda match: _api_blocks(match.group(1)), markdown)
    if "<!-- programs -->" in markdown:
        markdown = markdown.replace("<!-- programs -->", _programs())
    page_dir = posixpath.dirname(page.file.src_uri)
    return _LINK.sub(lambda match: _figure_link(match, page_dir), markdown)


def _config_fields():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # this checkout's package, whatever is installed
    from keras_ccmim.training.config import describe_fields

    return describe_fields()


def _api_blocks(package):
    """`::: module.Name` for each name `package/__init__.py` imports from a
    module of `package` (imports under `if TYPE_CHECKING:` included)."""
    path = os.path.join(ROOT, *package.split("."), "__init__.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    blocks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            blocks.extend(f"::: {node.module}.{alias.name}" for alias in node.names)
    if not blocks:
        raise ValueError(f"{path} imports nothing from its own modules.")
    return "\n\n".join(dict.fromkeys(blocks))


def _console_scripts():
    """`{name: "module:function"}` of pyproject.toml's `[project.scripts]`."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the table's `name = "target"` lines
        table = text.partition("[project.scripts]")[2].partition("\n[")[0]
        return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', table, re.MULTILINE))
    return tomllib.loads(text)["project"]["scripts"]


def _programs():
    """Each console script with its module's docstring, shown as the plain
    text it is."""
    sections = []
    for name, target in _console_scripts().items():
        module = target.partition(":")[0]
        with open(os.path.join(ROOT, *module.split(".")) + ".py") as f:
            text = ast.get_docstring(ast.parse(f.read()))
        if not text:
            raise ValueError(f"{module} has no docstring to document {name} with.")
        sections.append(f"## `{name}`\n\n```text\n{text}\n```")
    return "\n\n".join(sections)


def _figure_link(match, page_dir):
    target = match.group(2)
    if "://" in target:
        return match.group(0)
    source = posixpath.normpath(posixpath.join("docs", page_dir, target))
    if not source.startswith(FIGURES_SOURCE + "/"):
        return match.group(0)
    site = posixpath.join(FIGURES_SITE, source[len(FIGURES_SOURCE) + 1:])
    return match.group(1) + posixpath.relpath(site, page_dir or ".") + match.group(3)
