"""The built book, opened in headless Chromium as a reader sees it, and the executed notebooks of its run.

Needs a pipeline run and a book built from it (the Makefile's `test` target does both first):
  python -m kdlib run --profile smoke --out runs/smoke --book
KDLIB_RUN_DIR (default runs/smoke) and KDLIB_BOOK_DIR (default _build/html) point elsewhere.

`test_every_page_reads_clean` opens every page of the book in a same-origin checker page (an iframe at a
1300 px window, so images are measured as rendered), fails on noise (stderr output cells, warning text,
tracebacks, progress bars, absolute paths of a machine), on images that do not load or render narrower
than 500 px and on pages without a prose paragraph, and saves a full-page screenshot of every page into
<run>/screens/<page>.png for a reviewer.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("KDLIB_RUN_DIR", ROOT / "runs" / "smoke"))
BOOK_DIR = Path(os.environ.get("KDLIB_BOOK_DIR", ROOT / "_build" / "html"))
STEPS = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))]
WINDOW = (1300, 900)
MIN_IMAGE_PX = 500
NOISE = {  # what a reader must never see on a page
    "a warning": re.compile(r"\b[A-Z]\w*Warning\b:|warnings\.warn\("),
    "a traceback": re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.M),
    "a progress bar": re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+|\d+(\.\d+)?\s?(it/s|s/it)\b"),
    "an absolute path": re.compile(
        r"(?<![\w.:/<$])/(home|tmp|work|root|usr|opt|var|mnt|srv|Users|content)/[\w.-]+"
        r"|\.venv/lib|site-packages/"
    ),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(
            f"{what} {path} is missing: run `python -m kdlib run --profile smoke --out {RUN_DIR} --book` "
            f"first (the Makefile's `test` target does), or set KDLIB_RUN_DIR / KDLIB_BOOK_DIR"
        )
    return path


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is not installed: `apt-get install -y chromium` (Debian; the project's "
        "setup does it) — needed to check the rendered book"
    )


@pytest.fixture(scope="module")
def server():
    """Serve the built book on 127.0.0.1 (Chromium then loads images and scripts as a reader's browser does)."""
    _need(BOOK_DIR / "index.html", "built book")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(BOOK_DIR))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _dom(url: str, tmp_path: Path, script: str | None = None, budget_ms: int = 5000) -> str:
    """The page's DOM after load, dumped by headless Chromium (after `budget_ms` of virtual time)."""
    cmd = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed on {url}: {proc.stderr[-2000:]}"
    return proc.stdout


def _image_check_page(tmp_path: Path, target: str) -> Path:
    """A same-origin page that loads `target` in an iframe and writes, per <img>, whether it decoded."""
    page = BOOK_DIR / "_kdlib_imgcheck.html"
    page.write_text(
        "<html><body><pre id='out'>pending</pre><iframe id='f' src='" + target + "' width=1200 height=900></iframe>"
        "<script>document.getElementById('f').onload = function () {"
        " var imgs = this.contentDocument.images, rows = [];"
        " var wait = Array.prototype.map.call(imgs, function (i) { return i.decode().catch(function () {}); });"
        " Promise.all(wait).then(function () {"
        "  for (var i = 0; i < imgs.length; i++) { rows.push(imgs[i].getAttribute('src').slice(0, 60) + ' '"
        "   + imgs[i].complete + ' ' + imgs[i].naturalWidth); }"
        "  document.getElementById('out').textContent = 'IMAGES ' + imgs.length + '\\n' + rows.join('\\n'); });"
        "};</script></body></html>",
        encoding="utf-8",
    )
    return page


def test_results_page_shows_table_and_figures(server, tmp_path):
    page = _need(BOOK_DIR / "notebooks" / "10-results.html", "results page")
    dom = _dom(f"{server}/notebooks/10-results.html", tmp_path)
    assert "Results" in dom and "<table" in dom, "the results page has no table"
    # the paper-layout table: our scores beside the poster's for the teachers and students
    assert "paper" in dom and "ours" in dom and "Distil-BERT-base-ro" in dom
    imgs = re.findall(r"<img[^>]+src=\"([^\"]+)\"", dom)
    figures = [
        s
        for s in imgs
        if s.startswith(("data:image/png", "data:image/svg")) or s.endswith((".png", ".svg")) and "_static" not in s
    ]
    assert len(figures) >= 2, f"expected the loss-curve and score-vs-size figures, found images {imgs[:5]}"
    # every image of the page actually decodes in the browser (naturalWidth > 0)
    check = _image_check_page(tmp_path, "notebooks/10-results.html")
    try:
        out = _dom(f"{server}/{check.name}", tmp_path)
    finally:
        check.unlink()
    listing = re.search(r"IMAGES (\d+)\n?(.*?)</pre>", out, re.S)
    assert listing, f"the image check did not finish: {out[-500:]}"
    rows = [r.split() for r in listing.group(2).strip().splitlines()]
    assert int(listing.group(1)) >= 2 and all(r[-2] == "true" and int(r[-1]) > 0 for r in rows), rows
    assert page.stat().st_size > 0


def test_book_pages_render(server, tmp_path):
    dom = _dom(f"{server}/index.html", tmp_path)
    assert "Distilling Romanian BERTs" in dom
    assert "colab.research.google.com" in _dom(f"{server}/notebooks/04-evaluate.html", tmp_path), (
        "notebook pages should have a Colab launch button"
    )
    for name in ("book/method", "book/reproduce", "book/results", "book/differences", "book/references"):
        assert (BOOK_DIR / f"{name}.html").is_file(), f"{name}.html was not built"
    results = _dom(f"{server}/book/results.html", tmp_path)
    assert "<table" in results and "total wall time" in results  # the run's timing table, generated


def test_executed_notebooks_have_no_errors():
    for step in STEPS:
        path = _need(RUN_DIR / "notebooks" / f"{step}.ipynb", "executed notebook")
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{path}: not every cell was executed"
        errors = [
            (i, o.get("ename"), o.get("evalue"))
            for i, c in enumerate(nb.cells)
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, f"{path} has error outputs: {errors}"
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), (
            f"{path}: papermill did not inject the run's parameters"
        )
        stderr = [
            i
            for i, c in enumerate(nb.cells)
            for o in c.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stderr"
        ]
        assert not stderr, f"{path}: cells {stderr} write to stderr (warnings or progress bars in the page)"


# --------------------------------------------------------------------------- every page, as a reader sees it

_PAGE_PROBE = """
<html><body><pre id='out'>pending</pre>
<iframe id='f' src='TARGET' width='WIDTH' height='HEIGHT'></iframe>
<script>
document.getElementById('f').onload = function () {
  var doc = this.contentDocument, main = doc.querySelector('main') || doc.body;
  var imgs = Array.prototype.filter.call(main.querySelectorAll('img'),   // the content's, not the theme's icons
                                       function (i) { return (i.getAttribute('src') || '').indexOf('_static/') < 0; });
  Promise.all(imgs.map(function (i) { return i.decode().catch(function () {}); })).then(function () {
    var outputs = Array.prototype.map.call(main.querySelectorAll('.cell_output, .output'),
                                           function (e) { return e.innerText; });
    var inputs = Array.prototype.map.call(main.querySelectorAll('.cell_input'), function (e) { return e.innerText; });
    var clone = main.cloneNode(true);   // the page's text without code (commands a reader types are fine)
    Array.prototype.forEach.call(clone.querySelectorAll('.cell_input, div.highlight, pre, code'),
                                 function (e) { e.remove(); });
    var prose = Array.prototype.filter.call(main.querySelectorAll('p'), function (p) {
      return !p.closest('.cell_output') && p.innerText.trim().split(/\\s+/).length >= 8; }).length;
    var result = {
      height: doc.documentElement.scrollHeight,
      stderr: main.querySelectorAll('.stderr, .output.stderr').length,
      errors: main.querySelectorAll('.output.error, .output.traceback').length,
      prose: prose,
      text: clone.innerText,
      outputs: outputs.join('\\n'),
      inputs: inputs.join('\\n'),
      images: imgs.map(function (i) { return {src: (i.getAttribute('src') || '').slice(0, 80), complete: i.complete,
                                               natural: i.naturalWidth, width: i.getBoundingClientRect().width}; })
    };
    document.getElementById('out').textContent = 'RESULT ' + JSON.stringify(result);
  });
};
</script></body></html>
"""


_REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)


def _redirect_target(page: str) -> str | None:
    """Where a page sends the reader when it is only a redirect (Jupyter Book's root index.html), else None."""
    head = (BOOK_DIR / page).read_text(encoding="utf-8", errors="replace")[:2000]
    found = _REDIRECT.search(head)
    return str((Path(page).parent / found.group(1)).as_posix()) if found and "<p" not in head else None


def _pages() -> list[str]:
    """The book's pages a reader reads: every html page but the generated indexes, probes and redirects."""
    skip = {"genindex.html", "search.html", "_kdlib_imgcheck.html", "_kdlib_probe.html"}
    return sorted(
        page
        for page in (str(p.relative_to(BOOK_DIR)) for p in BOOK_DIR.rglob("*.html"))
        if Path(page).name not in skip
        and not any(part.startswith("_") for part in Path(page).parts)
        and _redirect_target(page) is None
    )


def test_redirects_lead_to_pages():
    """A redirect page (probed in a browser it races its own redirect) must lead to a page that is checked."""
    _need(BOOK_DIR / "index.html", "built book")
    pages = set(_pages())
    targets = {p.name: _redirect_target(p.name) for p in BOOK_DIR.glob("*.html")}  # the book's root pages
    redirects = {page: target for page, target in targets.items() if target is not None}
    assert redirects.get("index.html") in pages, f"the book's index.html does not lead to a page: {redirects}"
    for page, target in redirects.items():
        assert target in pages, f"{page} redirects to {target}, which is not a page of the book"


def _probe(server: str, page: str, tmp_path: Path) -> dict:
    probe = BOOK_DIR / "_kdlib_probe.html"
    probe.write_text(
        _PAGE_PROBE.replace("TARGET", page).replace("WIDTH", str(WINDOW[0])).replace("HEIGHT", str(WINDOW[1])),
        encoding="utf-8",
    )
    try:
        out = _dom(f"{server}/{probe.name}", tmp_path)
        found = re.search(r"RESULT (\{.*\})</pre>", out, re.S)
        if not found:  # a loaded machine can dump the DOM before a tall page's images decode: once more, longer
            out = _dom(f"{server}/{probe.name}", tmp_path, budget_ms=20000)
            found = re.search(r"RESULT (\{.*\})</pre>", out, re.S)
    finally:
        probe.unlink()
    assert found, f"{page}: the page probe did not finish: {out[-300:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def _screenshot(server: str, page: str, height: int, tmp_path: Path) -> Path:
    screens = RUN_DIR / "screens"
    screens.mkdir(parents=True, exist_ok=True)
    out = screens / (page.replace("/", "__").removesuffix(".html") + ".png")
    cmd = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{min(max(height, WINDOW[1]), 16000)}",
        "--virtual-time-budget=5000",
        f"--screenshot={out}",
        f"{server}/{page}",
    ]
    for attempt in range(2):  # headless Chromium now and then hangs on a tall page: one retry, then fail
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            break
        except subprocess.TimeoutExpired:
            if attempt:
                raise
    assert proc.returncode == 0 and out.is_file(), f"screenshot of {page} failed: {proc.stderr[-1000:]}"
    return out


def page_problems(page: str, seen: dict) -> list[str]:
    """What a reader would object to on one page (see the module docstring)."""
    problems = []
    if seen["stderr"]:
        problems.append(f"{seen['stderr']} stderr output cell(s)")
    if seen["errors"]:
        problems.append(f"{seen['errors']} error output(s)")
    for what, pattern in NOISE.items():
        # code cells may quote warnings or draw bars in their source, but never hold a machine's path
        # (papermill's injected-parameters cell does, unless the book build hides it)
        for where in ("outputs", "text", "inputs") if what == "an absolute path" else ("outputs", "text"):
            hit = pattern.search(seen[where])
            if hit:
                problems.append(f"{what} in its {where}: {seen[where][max(0, hit.start() - 60) : hit.end() + 60]!r}")
                break
    for img in seen["images"]:
        if not (img["complete"] and img["natural"] > 0):
            problems.append(f"image {img['src']} does not load")
        elif img["width"] < MIN_IMAGE_PX:
            problems.append(f"image {img['src']} renders {img['width']:.0f} px wide (< {MIN_IMAGE_PX})")
    if not seen["prose"]:
        problems.append("no prose paragraph")
    return problems


def test_every_page_reads_clean(server, tmp_path):
    pages = _pages()
    assert len(pages) >= len(STEPS) + 3, f"the book has too few pages: {pages}"
    report = {}
    for page in pages:
        seen = _probe(server, page, tmp_path)
        _screenshot(server, page, seen["height"], tmp_path)
        problems = page_problems(page, seen)
        if problems:
            report[page] = problems
    assert not report, (
        "pages a reader would object to (screenshots in "
        + str(RUN_DIR / "screens")
        + "):\n"
        + "\n".join(f"{p}: " + "; ".join(v) for p, v in report.items())
    )


def test_page_checks_catch_noise():
    """The checks themselves: each kind of noise on a page is reported."""
    clean = {
        "stderr": 0,
        "errors": 0,
        "prose": 2,
        "text": "A sentence.",
        "outputs": "0.95",
        "inputs": "x = 1",
        "images": [{"src": "a.png", "complete": True, "natural": 1400, "width": 700}],
    }
    assert page_problems("p.html", clean) == []
    cases = {
        "stderr": {"stderr": 1},
        "warning": {"outputs": "data.py:291: UserWarning: rebuilt copy"},
        "traceback": {"outputs": "Traceback (most recent call last):"},
        "progress": {"outputs": "distill:   7%|▋         | 1/15 [00:00<00:01, 48.90it/s]"},
        "path": {"text": "run_dir = '/tmp/pytest-1/runs/smoke'"},
        "injected cell": {"inputs": 'run_dir = "/work/main/runs/smoke"'},
        "venv": {"outputs": ".venv/lib/python3.11/x.py"},
        "broken image": {"images": [{"src": "b.png", "complete": True, "natural": 0, "width": 0}]},
        "narrow image": {"images": [{"src": "c.png", "complete": True, "natural": 600, "width": 300}]},
        "no prose": {"prose": 0},
    }
    for name, change in cases.items():
        assert page_problems("p.html", {**clean, **change}), f"{name} was not caught"
    assert not page_problems("p.html", {**clean, "text": "paths relative to <run>/distill/single"})


def test_readme_headline_is_generated_from_the_run(tmp_path):
    """`python -m kdlib readme` fills the README's marked section from a complete run, and only that section."""
    from kdlib.book import build as book
    from kdlib.book import runner

    _need(RUN_DIR / "run_summary.json", "the run")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{book.README_START}\nold text\n{book.README_END}\nafter\n", encoding="utf-8")
    book.update_readme(RUN_DIR, readme)
    text = readme.read_text(encoding="utf-8")
    summary = runner.read_json(RUN_DIR / "run_summary.json")
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{book.README_END}\nafter\n")
    assert "old text" not in text and f"Profile `{summary['profile']}`" in text
    assert f"**{summary['total_wall_s'] / 60:.1f} min**" in text
    assert "{doc}" not in text  # plain Markdown: GitHub does not render MyST roles
    book.update_readme(RUN_DIR, readme)
    assert readme.read_text(encoding="utf-8") == text  # a second update changes nothing

    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="README.md: expected one line"):
        book.update_readme(RUN_DIR, readme)
    assert readme.read_text(encoding="utf-8") == "no markers\n"
