"""The dashboard's files: the pages and scripts shipped in ``static/``, and the error page.

Pages are static HTML; everything they show comes from the JSON API through their scripts,
which build the page with DOM text nodes only (never ``innerHTML``), so a run or site named
``<script>…`` is shown as those characters. The error page is the only HTML made here, and every
piece of text in it is escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cache
from importlib import resources

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """A file to serve: its bytes and content type."""

    body: bytes
    content_type: str


@cache
def assets() -> dict[str, Asset]:
    """Every servable file under ``static/``, keyed by its path there (``vendor/uplot/…``).

    The table is built once from the package's own files, so a request can only name one of
    them: there is no path to traverse.
    """
    found: dict[str, Asset] = {}
    root = resources.files("fedloom.dashboard") / "static"

    def walk(node: resources.abc.Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if suffix in _TYPES:
                found[name] = Asset(child.read_bytes(), _TYPES[suffix])

    walk(root, "")
    return found


def page(name: str) -> Asset:
    """One of the HTML pages (``index``, ``run``, ``compare``)."""
    return assets()[f"{name}.html"]


def error_page(status: int, title: str, message: str) -> bytes:
    """A page saying what went wrong, with no script and every string escaped."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{status} {html.escape(title)} · fedloom</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header><a href="/" class="brand">fedloom</a></header>
<main>
<h1 id="error-title">{status} · {html.escape(title)}</h1>
<p id="error-message">{html.escape(message)}</p>
<p><a href="/">All runs</a></p>
</main>
</body>
</html>
""".encode()
