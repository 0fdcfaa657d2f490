"""The built docs typeset their equations in a real browser with no network.

The docs are built (notebooks not executed: this test is about the pages) into a temporary
folder, and headless Chromium opens a mechanism page from disk with every host name mapped to
nowhere. After a virtual-time budget the DOM is dumped: every math node Sphinx wrote must now
hold a MathJax ``mjx-container`` instead of its TeX. Separately, no page may show TeX that Markdown
left unparsed (outside any math node). A screenshot is written
beside the build (``page.png``) for a person to look at.

Chromium is Debian's ``chromium`` package (``.ci/setup`` installs it when run as root); the
test skips, saying so, only when no Chromium executable is found.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = "mechanisms/attention.lsh.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND"

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")


def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium executable on PATH (apt-get install chromium; .ci/setup does it as root)")


def build_docs(out: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", "-D", "nb_execution_mode=off",
                          "-d", str(out / ".doctrees"), str(ROOT / "docs"), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    (out / ".complete").touch()


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """One build per test run: under pytest-xdist the workers share it (a lock in the run's temp root)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp("html")
        build_docs(out)
        return out
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, common to its workers
    out = shared / "docs-html"
    with open(shared / "docs-html.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / ".complete").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build_docs(out)
    return out


def raw_tex(html: str) -> list[str]:
    """TeX outside math nodes, code and scripts: a ``$$`` or a ``$\\`` / ``\\(`` that Markdown did not parse."""
    html = re.sub(r"<(script|pre|style|code)\b.*?</\1>", "", html, flags=re.S)
    html = re.sub(r'<(span|div) class="math notranslate nohighlight">.*?</\1>', "", html, flags=re.S)
    return [html[max(m.start() - 60, 0):m.end() + 40] for m in re.finditer(r"\$\$|\$\\|\\\(|\\\[", html)]


def browse(html: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           NO_NETWORK, "--virtual-time-budget=20000", *args, html.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_mathjax_is_served_with_the_docs(built):
    page = (built / PAGE).read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page, flags=re.I)
    assert scripts, "the page loads no MathJax"
    assert all("://" not in s for s in scripts), f"MathJax comes from the network: {scripts}"
    for src in scripts:
        assert (built / PAGE).parent.joinpath(src.split("?")[0]).resolve().is_file(), f"{src} is not in the build"


def test_equations_are_typeset_in_chromium_without_network(built):
    page = built / PAGE
    math_nodes = len(re.findall(r'class="math notranslate nohighlight"', page.read_text()))
    assert math_nodes > 20, f"{PAGE} has only {math_nodes} equations: the wrong page?"
    dom = browse(page, "--dump-dom").stdout
    assert "<body" in dom, "Chromium returned no DOM"
    typeset = dom.count("<mjx-container")
    assert typeset >= math_nodes, f"{typeset} of {math_nodes} equations typeset by MathJax"
    untouched = re.findall(r'class="math notranslate nohighlight">\s*(?:\\\(|\\\[|\$)', dom)
    assert not untouched, f"{len(untouched)} math nodes still hold their TeX after MathJax ran"
    shot = built / "page.png"
    browse(page, "--window-size=1200,1400", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot"


@pytest.mark.parametrize("page", sorted(p.stem for p in (ROOT / "docs" / "mechanisms").glob("*.md")))
def test_no_raw_tex_on_a_mechanism_page(built, page):
    """Every ``$...$`` and ``$$...$$`` of the page became a math node (e.g. none split by a list marker)."""
    left = raw_tex((built / "mechanisms" / f"{page}.html").read_text())
    assert not left, f"docs/mechanisms/{page}.md: TeX left unparsed, shown raw: {left[:3]}"


def toctree_entries() -> list[str]:
    """Every document named in docs/index.md's toctrees, in navigation order ("Title <doc>" or "doc")."""
    text = (ROOT / "docs" / "index.md").read_text()
    entries = []
    for block in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append(re.sub(r"^.*<(.+)>$", r"\1", line))
    return entries


def test_overview_links_every_mechanism_page():
    overview = (ROOT / "docs" / "mechanisms" / "overview.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs" / "mechanisms").glob("*.md") if p.stem != "overview")
    missing = [page for page in pages if f"]({page})" not in overview]
    assert not missing, f"the Overview does not link {missing}"


def test_navigation_lists_every_page_and_notebook_with_the_reformer_pages_adjacent():
    entries = toctree_entries()
    pages = {f"mechanisms/{p.stem}" for p in (ROOT / "docs" / "mechanisms").glob("*.md")}
    notebooks = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.py")}
    assert not (pages | notebooks) - set(entries), f"not in the navigation: {sorted((pages | notebooks) - set(entries))}"
    lsh, rev = entries.index("mechanisms/attention.lsh"), entries.index("mechanisms/architecture.reversible")
    assert abs(lsh - rev) == 1, f"the two Reformer pages are {abs(lsh - rev)} entries apart in the navigation"
