"""kdlib.book.build's staging steps, without building a book: papermill's injected cell hidden from the pages,
the claims verdicts (or the sentence saying they are absent), the Colab commands from the one URL."""

from __future__ import annotations

import json

import nbformat
from papermill.parameterize import parameterize_notebook

from kdlib import colab
from kdlib.book import build as book


def _executed_like(tmp_path):
    """A notebook parameterised by papermill itself, as the runner's executed copies are."""
    cell = nbformat.v4.new_code_cell('profile = "default"\nrun_dir = "runs/notebook"')
    cell.metadata["tags"] = ["parameters", "remove-cell"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell("1 + 1", metadata={"tags": []})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {}
    nb = parameterize_notebook(nb, {"profile": "smoke", "run_dir": str(tmp_path / "run")})
    path = tmp_path / "01-x.ipynb"
    nbformat.write(nb, path)
    return path


def test_injected_parameters_cell_is_removed_from_pages(tmp_path):
    path = _executed_like(tmp_path)
    before = nbformat.read(path, as_version=4)
    injected = [c for c in before.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(tmp_path) in injected[0].source  # papermill wrote the machine's path
    assert "remove-cell" not in injected[0].metadata["tags"]  # ... and does not hide it itself
    book.tag_for_pages(path)
    after = nbformat.read(path, as_version=4)
    tagged = {tuple(c.metadata.get("tags", [])) for c in after.cells}
    assert ("injected-parameters", "remove-cell") in tagged and ("parameters", "remove-cell") in tagged
    assert after.cells[-1].metadata.get("tags", []) == []  # other cells untouched


def test_claims_placeholder_and_table(tmp_path):
    assert "no claims verdicts yet" in book.claims_markdown(tmp_path)
    (tmp_path / "claims").mkdir()
    records = [
        {
            "id": "C1",
            "claim": "students are about twice as fast",
            "source": "abstract",
            "figure": "06",
            "interval": None,
            "threshold": ">= 1.8x",
            "verdict": "supported",
            "reason": "",
        },
        {
            "id": "C2",
            "claim": "DistilMulti beats both single students",
            "source": "poster",
            "figure": "10",
            "interval": None,
            "threshold": "> 0",
            "verdict": "not testable here",
            "reason": "smoke models",
        },
    ]
    (tmp_path / "claims" / "main.json").write_text(json.dumps(records))
    text = book.claims_markdown(tmp_path)
    assert "students are about twice as fast" in text and "| supported" in text.replace("  ", " ")
    assert "Of the paper's 2 claims: 1 supported, 1 not testable here." in text
    # a companion chapter's claims: one sentence with its counts and a link to its page, not table rows
    (tmp_path / "claims" / "task-distill.json").write_text(json.dumps(records[:1]))
    text = book.claims_markdown(tmp_path)
    assert "The companion chapter {doc}`/notebooks/07-task-distill` checks 1 claims of its paper: 1 supported." in text
    assert text.count("students are about twice as fast") == 1


def test_headline_without_results_says_so(tmp_path):
    assert "no evaluation results" in book.headline_markdown(tmp_path, tmp_path)


def test_colab_commands_use_the_one_url_and_tag():
    text = book.colab_commands()
    assert colab.pip_requirement() in text and "[book]" not in text
    assert f"--branch {colab.release_ref()} {colab.repository_url()}" in text
