"""Loyalty of a student to its teacher(s) (Xu et al. 2021; Avram et al. 2022), and the prediction files they read.

Metrics (paper-spec §8), each a fraction (the book shows them ×100 as the paper does):

* label loyalty L-L: share of examples whose argmax labels agree (sklearn ``accuracy_score`` of the two
  argmax vectors), regardless of gold; in [0, 1].
* probability loyalty P-L: mean over examples of ``1 - JS distance(p_teacher, p_student)`` with log base 2,
  where JS distance = sqrt(JS divergence) is exactly what ``scipy.spatial.distance.jensenshannon``
  returns (the square root is taken once); in [0, 1].
* regression loyalty R-L: Pearson correlation of teacher and student regression outputs (the poster's
  definition). It is the raw Pearson coefficient, in [-1, 1] (typically in [0, 1]); not clipped.

For tagging tasks an example is a word (its first sub-token), so arrays are (words, classes).

Prediction file format (written by :func:`save_predictions`, used by ``kdlib.eval.finetune`` as
``<out_dir>/predictions.npz``): a NumPy ``.npz`` archive (``np.savez_compressed``; readable with
``np.load(path, allow_pickle=False)``) holding

* ``meta``: 0-d unicode string, a JSON object ``{"format": "kdlib-predictions/1", "task", "model",
  "kind" ("tagging"|"classification"|"regression"), "split", "label_names" (list or null)}``;
* ``ids``: (N,) unicode, one per example: the dataset ``id`` for sentence-level tasks and
  ``"<sentence id>:<word index>"`` (0-based) for tagging tasks;
* ``gold``: (N,) int64 label indices, or float32 values for regression;
* ``pred``: (N,) int64 argmax labels, or float32 outputs for regression;
* ``probs``: (N, C) float32 class probabilities (softmax), tagging/classification only;
* ``outputs``: (N,) float32 regression outputs (same as ``pred``), regression only.

.npz rather than JSON because XPOS has ~400 classes: 16k test words × 400 probabilities is ~60 MB as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import accuracy_score

from kdlib.eval.metrics import correlation
from kdlib.io import save_npz, write_json_atomic

FORMAT = "kdlib-predictions/1"
PREDICTIONS_FILE = "predictions.npz"
PROB_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------- validation
def _as_probs(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (examples, classes), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {a.shape}")
    if not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0, 0])
        raise ValueError(f"{name}: NaN or inf in example {bad}")
    if (a < 0).any():
        raise ValueError(f"{name}: negative probability in example {int(np.argwhere(a < 0)[0, 0])}")
    sums = a.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"{name}: probabilities of example {i} sum to {sums[i]:.6f}, expected 1 (tolerance {PROB_TOLERANCE}); "
            "pass softmax probabilities, not logits"
        )
    return a


def _as_outputs(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array (examples,), got shape {a.shape}")
    if a.size < 2:
        raise ValueError(f"{name}: need at least 2 examples for a correlation, got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: NaN or inf in example {int(np.argwhere(~np.isfinite(a))[0, 0])}")
    return a


def _same_shape(t: np.ndarray, s: np.ndarray) -> None:
    if t.shape[0] != s.shape[0]:
        raise ValueError(f"teacher has {t.shape[0]} examples but student has {s.shape[0]}")
    if t.shape[1:] != s.shape[1:]:
        raise ValueError(f"teacher has {t.shape[1:]} classes but student has {s.shape[1:]}")


# ------------------------------------------------------------------------------------------- metrics
def label_loyalty(teacher_probs: Any, student_probs: Any) -> float:
    """L-L: fraction of examples where the teacher's and the student's argmax labels agree."""
    t, s = _as_probs(teacher_probs, "teacher_probs"), _as_probs(student_probs, "student_probs")
    _same_shape(t, s)
    return float(accuracy_score(t.argmax(axis=1), s.argmax(axis=1)))


def probability_loyalty(teacher_probs: Any, student_probs: Any) -> float:
    """P-L: mean over examples of 1 - JS distance (base 2; sqrt of the JS divergence, taken once)."""
    t, s = _as_probs(teacher_probs, "teacher_probs"), _as_probs(student_probs, "student_probs")
    _same_shape(t, s)
    dist = jensenshannon(t, s, base=2, axis=1)  # already the distance = sqrt(divergence)
    return float(np.mean(1.0 - np.clip(dist, 0.0, 1.0)))


def regression_loyalty(teacher_outputs: Any, student_outputs: Any) -> float:
    """R-L: Pearson correlation of the two output vectors (raw, in [-1, 1]; 0.0 if one is constant)."""
    t, s = _as_outputs(teacher_outputs, "teacher_outputs"), _as_outputs(student_outputs, "student_outputs")
    _same_shape(t[:, None], s[:, None])
    return correlation(t, s, "pearson")


# ------------------------------------------------------------------------------------ prediction files
@dataclass
class Predictions:
    """One model's predictions on one split of one task (see the module docstring for the file format)."""

    task: str
    model: str
    kind: str
    split: str
    label_names: list[str] | None
    ids: list[str]
    gold: np.ndarray
    pred: np.ndarray
    probs: np.ndarray | None = None
    outputs: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.kind not in ("tagging", "classification", "regression"):
            raise ValueError(f"kind must be tagging, classification or regression, got {self.kind!r}")
        if len(set(self.ids)) != n:
            raise ValueError("example ids are not unique")
        for name in ("gold", "pred", "probs", "outputs"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but there are {n} ids")
        if self.kind == "regression" and self.outputs is None:
            raise ValueError("regression predictions need outputs")
        if self.kind != "regression" and self.probs is None:
            raise ValueError(f"{self.kind} predictions need probs")

    def sentences(self, values: Sequence[Any]) -> list[list[Any]]:
        """Group per-word values of a tagging task back into sentences (ids '<sent>:<word>', in file order)."""
        out: dict[str, list[Any]] = {}
        for i, v in zip(self.ids, values):
            out.setdefault(i.rsplit(":", 1)[0], []).append(v)
        return list(out.values())


def save_predictions(pred: Predictions, path: str | Path) -> Path:
    """Write ``pred`` to ``path`` (.npz) atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "task": pred.task,
        "model": pred.model,
        "kind": pred.kind,
        "split": pred.split,
        "label_names": pred.label_names,
    }
    regression = pred.kind == "regression"
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps(meta, ensure_ascii=False)),
        "ids": np.array(pred.ids, dtype=str),
        "gold": np.asarray(pred.gold, dtype=np.float32 if regression else np.int64),
        "pred": np.asarray(pred.pred, dtype=np.float32 if regression else np.int64),
    }
    if pred.probs is not None:
        arrays["probs"] = np.asarray(pred.probs, dtype=np.float32)
    if pred.outputs is not None:
        arrays["outputs"] = np.asarray(pred.outputs, dtype=np.float32)
    save_npz(path, arrays)
    return path


def load_predictions(path: str | Path) -> Predictions:
    """Read a predictions file (or the predictions.npz inside a finetune output folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist (written by `python -m kdlib finetune`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile / numpy errors: not a predictions archive
        raise ValueError(f"{path}: not a readable .npz predictions file ({exc})") from exc
    for key in ("meta", "ids", "gold", "pred"):
        if key not in data:
            raise ValueError(f"{path}: missing array {key!r}; expected the {FORMAT} format")
    meta = json.loads(str(data["meta"]))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        return Predictions(
            task=meta["task"],
            model=meta["model"],
            kind=meta["kind"],
            split=meta.get("split", "test"),
            label_names=meta.get("label_names"),
            ids=[str(i) for i in data["ids"]],
            gold=data["gold"],
            pred=data["pred"],
            probs=data.get("probs"),
            outputs=data.get("outputs"),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- report
def _check_compatible(teacher: Predictions, student: Predictions, tname: str, sname: str) -> None:
    if (teacher.task, teacher.kind, teacher.split) != (student.task, student.kind, student.split):
        raise ValueError(
            f"{tname} is {teacher.task}/{teacher.kind}/{teacher.split} but {sname} is "
            f"{student.task}/{student.kind}/{student.split}"
        )
    if teacher.ids != student.ids:
        if len(teacher.ids) != len(student.ids):
            raise ValueError(f"{tname} has {len(teacher.ids)} examples but {sname} has {len(student.ids)}")
        i = next(k for k, (a, b) in enumerate(zip(teacher.ids, student.ids)) if a != b)
        raise ValueError(
            f"example ids differ at position {i}: {tname} has {teacher.ids[i]!r}, {sname} has {student.ids[i]!r}"
        )
    if teacher.label_names != student.label_names:
        raise ValueError(f"label names differ between {tname} and {sname}")


def _loyalty(teacher: Predictions | np.ndarray, student: Predictions) -> dict[str, float]:
    if student.kind == "regression":
        t = teacher.outputs if isinstance(teacher, Predictions) else teacher
        return {"regression_loyalty": regression_loyalty(t, student.outputs)}
    t = teacher.probs if isinstance(teacher, Predictions) else teacher
    return {
        "label_loyalty": label_loyalty(t, student.probs),
        "probability_loyalty": probability_loyalty(t, student.probs),
    }


def loyalty_report(teacher_pred_paths: Sequence[str | Path], student_pred_path: str | Path) -> dict[str, Any]:
    """Loyalty of one student to each teacher and, with several teachers, to their ensemble mean.

    The ensemble is the mean of the teachers' class probabilities (classification/tagging) or of their
    regression outputs.
    """
    if isinstance(teacher_pred_paths, (str, Path)):
        teacher_pred_paths = [teacher_pred_paths]
    if not teacher_pred_paths:
        raise ValueError("give at least one teacher predictions file")
    student = load_predictions(student_pred_path)
    teachers = [load_predictions(p) for p in teacher_pred_paths]
    for p, t in zip(teacher_pred_paths, teachers):
        _check_compatible(t, student, str(p), str(student_pred_path))
    report: dict[str, Any] = {
        "task": student.task,
        "kind": student.kind,
        "split": student.split,
        "examples": len(student.ids),
        "student": {"path": str(student_pred_path), "model": student.model},
        "teachers": [
            {"path": str(p), "model": t.model, **_loyalty(t, student)} for p, t in zip(teacher_pred_paths, teachers)
        ],
    }
    if len(teachers) > 1:
        key = "outputs" if student.kind == "regression" else "probs"
        mean = np.mean([np.asarray(getattr(t, key), dtype=np.float64) for t in teachers], axis=0)
        report["ensemble"] = {"models": [t.model for t in teachers], **_loyalty(mean, student)}
    return report


def cli(argv: list[str]) -> int:
    """`python -m kdlib loyalty --teacher T [--teacher T2] --student S [--out report.json]`."""
    ap = argparse.ArgumentParser(prog="python -m kdlib loyalty", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--teacher",
        action="append",
        required=True,
        help="teacher predictions.npz or finetune output folder (repeat for several teachers)",
    )
    ap.add_argument("--student", required=True, help="student predictions.npz or finetune output folder")
    ap.add_argument("--out", help="write the report as JSON here")
    args = ap.parse_args(argv)
    try:
        report = loyalty_report(args.teacher, args.student)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib loyalty: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_json_atomic(Path(args.out), report)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
