"""MkDocs hook: the repository files that the pages link to, in the site.

The pages in docs/ are also read on GitHub, where ``../CHANGELOG.md`` or
``../configs/tiny.yaml`` are ordinary links. For the site, every file outside docs/ that a page
links to is copied under ``repo/`` with its path kept (a Markdown file becomes a page, whose
own links are followed the same way), and each link is rewritten to where its target lies in
the site. A link to a file that does not exist is left alone, so ``mkdocs build --strict``
fails on it as on any broken link.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

MIRROR = "repo"
"""The site folder that holds the repository files linked from the pages."""

LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?(\))")
"""A Markdown inline link or image: ``](target#anchor)``."""

_ROOT: Path | None = None
_DOCS = "docs"


def _repo_path(page_repo_path: str, target: str) -> str | None:
    """The repository path a relative link on the page at ``page_repo_path`` points to."""
    if not target or "://" in target or target.startswith(("/", "mailto:")):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), target))
    return None if joined.startswith("..") else joined


def _site_uri(repo_path: str) -> str:
    """Where a repository file lies in the site."""
    if repo_path == _DOCS or repo_path.startswith(_DOCS + "/"):
        return repo_path[len(_DOCS) + 1:]
    return f"{MIRROR}/{repo_path}"


def _page_repo_path(src_uri: str) -> str:
    if src_uri.startswith(MIRROR + "/"):
        return src_uri[len(MIRROR) + 1:]
    return f"{_DOCS}/{src_uri}"


def on_files(files: Files, config: Any) -> Files:
    """Add the linked repository files, following the links of those that are pages."""
    global _ROOT, _DOCS
    docs_dir = Path(config["docs_dir"]).resolve()
    _ROOT, _DOCS = docs_dir.parent, docs_dir.name
    queue = [f for f in files.documentation_pages() if f.abs_src_path]
    seen: set[str] = set()
    while queue:
        page = queue.pop()
        page_path = _page_repo_path(page.src_uri)
        text = Path(page.abs_src_path or "").read_text(encoding="utf-8")
        for match in LINK.finditer(text):
            target = _repo_path(page_path, match.group(2))
            if target is None or target.startswith(_DOCS + "/") or target in seen:
                continue
            source = _ROOT / target
            if not source.is_file():
                continue  # broken: left for mkdocs to report
            seen.add(target)
            mirrored = File.generated(config, f"{MIRROR}/{target}", abs_src_path=str(source))
            files.append(mirrored)
            if target.endswith(".md"):
                queue.append(mirrored)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Rewrite the page's links to repository files to their place in the site."""
    page_path = _page_repo_path(page.file.src_uri)
    here = posixpath.dirname(page.file.src_uri)
    mirrored = page.file.src_uri.startswith(MIRROR + "/")

    def rewrite(match: re.Match[str]) -> str:
        target = _repo_path(page_path, match.group(2))
        if target is None or not (_ROOT and (_ROOT / target).exists()):
            return match.group(0)
        if not mirrored and target.startswith(_DOCS + "/"):
            return match.group(0)  # a docs page's link into docs/: as written
        uri = posixpath.relpath(_site_uri(target), here or ".")
        return f"{match.group(1)}{uri}{match.group(3) or ''}{match.group(4)}"

    return LINK.sub(rewrite, markdown)
