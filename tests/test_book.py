"""The built book, opened in headless Chromium, and the executed notebooks of the run it shows.

Needs a pipeline run and a book built from it (the Makefile's `test` target does both first):
  python -m kdlib run --profile smoke --out runs/smoke --book
KDLIB_RUN_DIR (default runs/smoke) and KDLIB_BOOK_DIR (default _build/html) point elsewhere.
"""
from __future__ import annotations

import functools
import http.server
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
STEPS = ["01-teachers", "02-distill-single", "03-distill-ensemble", "04-evaluate", "05-loyalty", "06-bench",
         "07-results"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} {path} is missing: run `python -m kdlib run --profile smoke --out {RUN_DIR} --book` "
                    f"first (the Makefile's `test` target does), or set KDLIB_RUN_DIR / KDLIB_BOOK_DIR")
    return path


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is not installed: `apt-get install -y chromium` (Debian; the project's "
                "setup does it) — needed to check the rendered book")


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


def _dom(url: str, tmp_path: Path, script: str | None = None) -> str:
    """The page's DOM after load, dumped by headless Chromium."""
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", "--dump-dom", url]
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
        "};</script></body></html>", encoding="utf-8")
    return page


def test_results_page_shows_table_and_figures(server, tmp_path):
    page = _need(BOOK_DIR / "notebooks" / "07-results.html", "results page")
    dom = _dom(f"{server}/notebooks/07-results.html", tmp_path)
    assert "Results" in dom and "<table" in dom, "the results page has no table"
    # the paper-layout table: our scores beside the poster's for the teachers and students
    assert "paper" in dom and "ours" in dom and "Distil-BERT-base-ro" in dom
    imgs = re.findall(r"<img[^>]+src=\"([^\"]+)\"", dom)
    figures = [s for s in imgs if s.startswith("data:image/png") or s.endswith(".png")]
    assert len(figures) >= 2, f"expected the loss-curve and score-vs-size figures, found images {imgs[:5]}"
    # every image of the page actually decodes in the browser (naturalWidth > 0)
    check = _image_check_page(tmp_path, "notebooks/07-results.html")
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
    assert "colab.research.google.com" in _dom(f"{server}/notebooks/04-evaluate.html", tmp_path), \
        "notebook pages should have a Colab launch button"
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
        errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells)
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path} has error outputs: {errors}"
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), \
            f"{path}: papermill did not inject the run's parameters"
