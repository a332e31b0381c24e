"""Check every internal link of the built documentation site: the target file exists and, for a link with
a ``#fragment``, the target page has an element with that id.

    python .ci/check_links.py site      # exit 1 listing each broken link (page, href)

External links (http, https, mailto) are not fetched: CI has no network. Complements
``mkdocs build --strict``, which checks the Markdown sources' links; this checks the HTML that ships
(navigation, API pages rendered by mkdocstrings, the search page).
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") in ("canonical",)):
                self.links.append(a[key])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _target(page: Path, url: str, site: Path) -> Path:
    path = unquote(urlsplit(url).path)
    if path.startswith("/"):  # root-relative (404.html): the site is served at its root
        target = (site / path.lstrip("/")).resolve()
    else:
        target = (page.parent / path).resolve() if path else page
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target


def check(site: Path) -> list[str]:
    site = site.resolve()
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for url in parsed.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith(("//", "mailto:", "javascript:", "data:")):
                continue
            target = _target(page, url, site)
            where = f"{page.relative_to(site)}: {url}"
            if not target.exists():
                broken.append(
                    f"{where} (no file {target.relative_to(site) if site in target.parents else target})"
                )
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no id #{parts.fragment})")
    return broken


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    if not (site / "index.html").exists():
        print(f"{site}/index.html not found: build the site first (mkdocs build --strict)", file=sys.stderr)
        return 2
    broken = check(site)
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    n = sum(1 for _ in site.rglob("*.html"))
    print(f"check_links: {n} pages, {len(broken)} broken internal links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
