#!/usr/bin/env bash
# Builds the documentation site strictly: a broken link or anchor, a page
# left out of the nav, or a docstring or reference mkdocstrings cannot
# resolve fails the build. The site goes to a temporary folder, removed
# afterwards, unless a folder is given.
#
# Usage: tools/build_docs.sh [SITE_DIR]
# Needs the docs extra: .venv/bin/python -m pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if ! "$PY" -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
  echo "Error: mkdocs, mkdocs-material or mkdocstrings[python] is missing from $PY: install them with $PY -m pip install -e \".[docs]\"" >&2
  exit 2
fi
site="${1:-}"
if [ -z "$site" ]; then
  site="$(mktemp -d)"
  trap 'rm -rf "$site"' EXIT
fi
export NO_MKDOCS_2_WARNING=1
"$PY" -m mkdocs build --strict --site-dir "$site"
echo "Docs built into $site"
