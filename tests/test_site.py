"""The built documentation site, opened as a person would: every page in a real headless Chromium.

It serves ``site/`` (made by ``mkdocs build --strict``; built here into a temporary folder when
missing) on 127.0.0.1 and opens every page in Debian's ``chromium`` driven by Playwright (never a
downloaded browser). A page fails on a status other than 200, a console error or uncaught exception,
a request to any other host (the site must work offline), a failed request, a broken image or a link
to a page of the site that does not exist. The site's search must find a public name from the built
files alone. A screenshot of the home page goes to
``build/docs/home.png`` (``GD_JAX_SITE_SCREENSHOT`` elsewhere).

Skips, saying why, where chromium, Playwright or the site (and mkdocs to build it) is missing;
fails instead where ``GD_JAX_SITE_REQUIRE_BROWSER`` is set (``.ci/docs`` sets it).
Settings: ``GD_JAX_SITE`` (the built site; default ``site/``), ``GD_JAX_CHROMIUM`` (default
``/usr/bin/chromium``).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def _skip(reason: str):
    """Skips, unless GD_JAX_SITE_REQUIRE_BROWSER is set (CI: .ci/docs), where a missing piece fails."""
    if os.environ.get("GD_JAX_SITE_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("GD_JAX_SITE", ROOT / "site"))
CHROMIUM = os.environ.get("GD_JAX_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("GD_JAX_SITE_SCREENSHOT", ROOT / "build" / "docs" / "home.png"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: ``SITE`` where it exists, else one built here into a temporary folder.

    Never into ``site/`` itself: tests/test_docs.py reads a built ``site/`` and may run at the
    same time on another pytest worker, which must not see a half-written one.
    """
    if (SITE / "index.html").exists():
        return SITE
    if shutil.which("mkdocs") is None and subprocess.run([sys.executable, "-c", "import mkdocs"]).returncode:
        _skip(f"no built site at {SITE} and mkdocs is not installed to build it (pip install -e '.[docs]')")
    built = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return built


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A browser that drops a request it no longer needs (a broken pipe) is not the site's fault;
        # anything else is printed as the standard server does.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        _skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium; or set GD_JAX_CHROMIUM)")
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        _skip("Playwright is not installed (pip install -e '.[docs]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def _pages(site: Path) -> list[str]:
    return sorted("/" + str(p.relative_to(site)).replace(os.sep, "/").removesuffix("index.html")
                  for p in site.rglob("*.html"))


_BROKEN_IMAGES = """() => Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.currentSrc || img.src)"""


def _open(context, url: str, problems: list[str], origin: str):
    page = context.new_page()

    def outside(route):
        problems.append(f"requested another host: {route.request.url}")
        route.abort()

    page.route(lambda u: not u.startswith(origin), outside)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    page.on("requestfailed", lambda r: r.url.startswith(origin) and problems.append(
        f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} for {r.url}"))
    response = page.goto(url, wait_until="load")
    if response is None or response.status != 200:
        problems.append(f"status {response.status if response else 'none'}")
    page.wait_for_load_state("networkidle")
    broken = page.evaluate(_BROKEN_IMAGES)
    problems += [f"broken image: {src}" for src in broken]
    return page


@pytest.mark.slow  # builds the site (about a minute) unless .ci/docs has
def test_every_page_opens_clean_in_chromium(site, server, browser):
    pages = _pages(site)
    assert len(pages) > 20, f"the site has only {len(pages)} pages: {pages}"
    failures, links = [], {}
    for path in pages:
        problems: list[str] = []
        page = _open(browser, server + path, problems, server)
        for href in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            if href.startswith(server):
                links.setdefault(href.split("#")[0], path)
        if path == "/":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=False)
        page.close()
        failures += [f"{path}: {p}" for p in problems]
    for url, where in sorted(links.items()):  # every link between pages leads somewhere
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status != 200:
            failures.append(f"{where}: link to {url[len(server):]} gives {status}")
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:50])


@pytest.mark.slow
def test_search_works_offline(site, server, browser):
    problems: list[str] = []
    page = _open(browser, server + "/", problems, server)
    page.keyboard.press("/")  # Material's shortcut focuses the search box
    page.keyboard.type("shuffled_order")
    page.wait_for_selector(".md-search-result__item", timeout=30_000)
    titles = page.locator(".md-search-result__item").all_inner_texts()
    page.close()
    assert not problems, problems
    assert any("shuffled_order" in t for t in titles), titles[:5]
