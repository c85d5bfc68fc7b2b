"""The rendered book as a reader sees it: every page of the table of contents opened in a real browser (headless
Chromium, driven by Playwright), served from a local server, with the network cut off.

A page fails on a console error, a failed request, a request to any other host, an image that did not load,
maths that MathJax left as raw TeX, a link to a page or section that does not exist, code or a table wider than
its box, a long output that is not folded, a figure with glyphs its font lacks, or (exercise pages) no button to download the notebook. Search must
work offline. A screenshot of each page goes to `_build/screenshots/` for review.
"""
from __future__ import annotations

import functools
import html
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from conftest import REPO, built_book_html


SCREENSHOTS = REPO / "_build" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}  # a laptop screen: the book's code boxes are narrowest here
LONG_OUTPUT_LINES = 60  # a longer output must be folded (scrolled or hidden behind a toggle)
SEARCHES = ["attention", "Warsaw"]


def toc_pages() -> list[str]:
    """The pages a reader can reach from the table of contents, as paths in the built book."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return ["index.html"] + [f"{entry['file']}.html" for entry in toc["chapters"]]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """The built book over http on 127.0.0.1 (a free port), as its base URL."""
    root = built_book_html()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, ("Chromium is not installed: `make test` installs it (Debian's `chromium` package); "
                      "or run `sudo apt-get install chromium`.")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


class Visit:
    """One page opened with every request watched: anything not from our server is refused and noted."""

    def __init__(self, browser, base: str):
        self.base, self.problems = base, []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base) or url.startswith("data:") or url.startswith("blob:"):
            return route.continue_()
        self.problems.append(f"request to another host: {url}")
        return route.abort()

    def open(self, path: str):
        self.page.goto(self.base + path, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        if self.page.evaluate("() => !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"):
            self.page.evaluate("() => MathJax.startup.promise")
        return self.page

    def close(self):
        self.context.close()


PAGE_FACTS = """() => {
  const body = document.querySelector('main') || document.body;
  const prose = body.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .MathJax').forEach(e => e.remove());
  const text = prose.textContent;
  const wide = [...document.querySelectorAll('div.cell pre, div.highlight pre')]
    .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 2)
    .map(p => p.textContent.split('\\n').reduce((a, b) => a.length >= b.length ? a : b).slice(0, 120));
  const tables = [...document.querySelectorAll('main table')]
    .filter(t => t.offsetParent !== null)
    .filter(t => t.scrollWidth > (t.closest('.pst-scrollable-table-container, .table-wrapper, div.cell_output, '
                                             + 'article') || t.parentElement).clientWidth + 2)
    .map(t => t.textContent.trim().slice(0, 80));
  const outputs = [...document.querySelectorAll('div.cell_output pre')]
    .filter(p => p.textContent.split('\\n').length > %d)
    .filter(p => !p.closest('.tag_output_scroll, .tag_hide-output, details, .toggle-details, .toggle-hidden'))
    .map(p => p.textContent.split('\\n').length);
  const images = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {raw_tex: (text.match(/\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{/g) || []).length, wide, tables, outputs,
          images, links, title: document.title};
}""" % LONG_OUTPUT_LINES


def _missing_targets(root: Path, base: str, links: list[str]) -> list[str]:
    """Links into the book whose page or section does not exist."""
    missing = []
    for link in sorted(set(links)):
        if not link.startswith(base):
            continue
        parts = urlsplit(link)
        rel = unquote(parts.path)[len(urlsplit(base).path):] or "index.html"
        target = root / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            missing.append(link)
        elif parts.fragment and target.suffix == ".html":
            ids = set(re.findall(r'\sid="([^"]+)"', target.read_text(encoding="utf-8")))
            if html.unescape(unquote(parts.fragment)) not in {html.unescape(i) for i in ids}:
                missing.append(link)
    return missing


@pytest.mark.parametrize("path", toc_pages())
def test_page_renders_offline_and_fits(site, browser, path):
    root, base = site
    visit = Visit(browser, base)
    try:
        page = visit.open(path)
        facts = page.evaluate(PAGE_FACTS)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / (path.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
        problems = list(visit.problems)
        if facts["raw_tex"]:
            problems.append(f"{facts['raw_tex']} pieces of maths left as raw TeX ($$, \\(, \\[, \\begin)")
        problems += [f"an image did not load: {src}" for src in facts["images"]]
        if "missing from font" in page.content():
            problems.append("a figure has characters its font lacks (matplotlib: 'Glyph ... missing from font')")
        problems += [f"code wider than its box (no line may need sideways scrolling): {line!r}"
                     for line in facts["wide"]]
        problems += [f"a table wider than the page: {t!r}" for t in facts["tables"]]
        problems += [f"an output of {n} lines is not folded (tag the cell output_scroll or hide-output)"
                     for n in facts["outputs"]]
        problems += [f"a link to a page or section that does not exist: {link}"
                     for link in _missing_targets(root, base, facts["links"])]
        if path.startswith("exercises/"):
            button = page.query_selector("a.btn-download-source-button")
            href = button.get_attribute("href") if button else None
            if not (href and href.endswith(".ipynb")):
                problems.append("an exercise page without its button to download the notebook")
            else:
                response = page.request.get(page.url.rsplit("/", 1)[0] + "/" + href)
                if not response.ok:
                    problems.append(f"the notebook download does not work: {href} (HTTP {response.status})")
        assert not problems, f"{path} ({facts['title']}):\n  " + "\n  ".join(problems)
    finally:
        visit.close()


@pytest.mark.parametrize("word", SEARCHES)
def test_search_works_offline(site, browser, word):
    _, base = site
    visit = Visit(browser, base)
    try:
        page = visit.open(f"search.html?q={word}")
        page.wait_for_selector("ul.search li", timeout=20_000)
        hits = page.eval_on_selector_all("ul.search li a", "els => els.map(e => e.href)")
        assert hits, f"searching the book for {word!r} finds nothing"
        assert not visit.problems, "\n".join(visit.problems)
    finally:
        visit.close()
