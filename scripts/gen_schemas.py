"""Write the JSON schema files of the registered metadata kinds.

Into ``casstore/meta/schemas/kinds/`` (shipped in the package) and ``docs/schemas/kinds/``
(for readers). Run after changing a payload model in ``casstore/meta/kinds.py``; a test
fails while the files and the models disagree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from casstore.meta.kinds import KINDS, SCHEMA_DIR, schema_text

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Regenerate every kind's schema file, and copy the table schemas to docs."""
    package = SCHEMA_DIR / "kinds"
    docs = ROOT / "docs" / "schemas" / "kinds"
    for folder in (package, docs):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            if old.stem not in KINDS:
                old.unlink()
        for kind in KINDS:
            (folder / f"{kind}.json").write_text(schema_text(kind), encoding="utf-8")
    tables = ROOT / "docs" / "schemas" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    for table in sorted((SCHEMA_DIR / "tables").glob("*.json")):
        shutil.copyfile(table, tables / table.name)
    print(f"wrote {len(KINDS)} kind schemas to {package} and {docs}")


if __name__ == "__main__":
    main()
