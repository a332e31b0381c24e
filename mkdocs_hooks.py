"""mkdocs hook: render the Sphinx cross-reference roles some docstrings use (``:class:`~a.b.C```) as plain
code, as mkdocstrings (Markdown) does not know them; ``~`` drops the module path as Sphinx does."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:mod|class|func|meth|attr|exc|data|obj|py:\w+):<code>~?([^<]*)</code>")


def _shorten(match: re.Match) -> str:
    target = match.group(1)
    tilde = match.group(0).split("<code>", 1)[1].startswith("~")
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_shorten, html)
