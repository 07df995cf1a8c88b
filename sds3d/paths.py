"""Safe file and folder names built from free text (prompts are never used as paths verbatim)."""

from __future__ import annotations

import re


def slugify(text: str, max_len: int = 64) -> str:
    """Lowercase ASCII letters, digits and '-': no separators, dots, or control characters survive."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "run"
