"""MkDocs hook: docs/benchmarks.md shows the repository's BENCHMARKS.md.

BENCHMARKS.md stays the single source (it is read on GitHub too). Its links to folders and files of the repository
outside docs/ cannot resolve in the built site, so they are shown as code (the path) instead of links.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)")


def _as_path(match: re.Match) -> str:
    text = match.group(1)
    return text if text.startswith("`") else f"`{text}`"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "benchmarks.md":
        return markdown
    source = Path(config.config_file_path).parent / "BENCHMARKS.md"
    return _LINK.sub(_as_path, source.read_text(encoding="utf-8"))
