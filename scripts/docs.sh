#!/usr/bin/env bash
# Build the documentation site into site/ from docs/ and the docstrings (mkdocs.yml), warnings as
# errors: a broken link, a missing page or a docstring mkdocstrings cannot read fails the build.
# Open site/index.html, or serve it live with: .venv/bin/mkdocs serve
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict "$@"
echo "docs: built into site/ (open site/index.html)"
