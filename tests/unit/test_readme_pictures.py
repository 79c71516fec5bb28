"""The README's pictures (``make screenshots``) exist and stay small."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_picture_the_readme_shows_is_there_and_small() -> None:
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert shown, "the README shows no pictures"
    for rel in shown:
        path = ROOT / rel
        assert path.is_file(), f"{rel} is missing: run `make screenshots` after `make demo`"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
        assert path.stat().st_size < 150_000, f"{rel}: keep pictures small (quantized PNG)"
