"""Committed reports and docs name files relative to the project, never by a machine's absolute path."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ["README.md", "docs", "bench/results"]
ABSOLUTE = re.compile(r"(?<![\w.])(/w[o]rk/|/r[o]ot/|/home/[\w.-]+/|/Users/[\w.-]+/|/tmp/pytest-|[A-Z]:\\\\Users\\\\)")


def test_reports_and_docs_name_no_absolute_path() -> None:
    found = []
    for entry in REPORTS:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in {".md", ".json", ".txt"})
        for file in files:
            for n, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
                if ABSOLUTE.search(line) or str(ROOT) in line:
                    found.append(f"{file.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not found, "absolute paths in committed reports:\n" + "\n".join(found[:20])
