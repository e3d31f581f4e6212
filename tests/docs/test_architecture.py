"""docs/architecture.md is where the code points, and what it calls public is public."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"


def test_the_architecture_doc_exists_and_nothing_points_to_a_missing_design_md():
    text = DOC.read_text()
    for section in ("## One path for the data", "## Layout", "## The public API", "## Rules that shape the code",
                    "## Many machines, one book"):  # fmt: skip
        assert section in text, section
    sources = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for folder in ("mlcost", "operators", "plugins", "components"):
        sources += sorted((ROOT / folder).rglob("*.py"))
    stale = [str(p.relative_to(ROOT)) for p in sources if "DESIGN.md" in p.read_text()]
    assert stale == [], f"these point to DESIGN.md, which is not in the repository: {stale}"
    assert "docs/architecture.md" in (ROOT / "pyproject.toml").read_text()


def test_the_public_api_the_doc_names_is_exported():
    import mlcost

    block = DOC.read_text().split("## The public API", 1)[1]
    (imports,) = re.findall(r"from mlcost import ([^\n]+)", block)[:1]
    names = [n.strip() for n in imports.split(",")]
    assert names and all(n in mlcost.__all__ for n in names), set(names) - set(mlcost.__all__)


def test_every_module_the_doc_names_exists():
    text = DOC.read_text()
    for path in sorted(set(re.findall(r"`(mlcost/[\w/]+\.py)`", text))):
        assert (ROOT / path).is_file(), path
