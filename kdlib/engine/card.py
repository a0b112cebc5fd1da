"""Model cards as the hub expects them, and pushing a saved model folder to the hub.

A card is ``huggingface_hub.ModelCard`` text: YAML metadata made with ``ModelCardData`` (license, base_model,
datasets, pipeline_tag, model-index results) above a Markdown body. The licences of the teachers and of the
data are stated in the card, where a user meets the model:

* teachers: ``dumitrescustefan/bert-base-romanian-cased-v1`` is MIT; ``readerbench/RoBERT-base`` states no
  licence on its hub card (the card says to see the teacher's card); a local teacher folder's licence is
  the ``license`` of its own README.md card when it has one;
* data (the evaluation tasks, and the distillation corpus, made of their train splits): UD Romanian RRT
  CC BY-SA 4.0, RONEC MIT (its repository's LICENSE), LaRoSeDa and MOROCO CC BY-NC-SA 4.0 (non-commercial),
  RO-STS CC BY-SA 4.0 (stated in its README).

The ``license`` field is the most restrictive of the known input licences ("other" when one is unknown):
a conservative summary, not legal advice. A card holds no absolute paths (local folders are written
relative to the run folder) and no measured times, so the same run gives the same card, byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from kdlib.data import corpus as kcorpus
from kdlib.data import tasks as ktasks
from kdlib.io import atomic_path

CARD_FILE = "README.md"
# hub teacher -> its licence (hub identifier); None: its hub card states none
TEACHER_LICENSES: dict[str, str | None] = {
    "dumitrescustefan/bert-base-romanian-cased-v1": "mit",
    "readerbench/RoBERT-base": None,
}
# from the least to the most restrictive; a mix of known licences is summarised by the last one present
LICENSE_ORDER = ("mit", "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-sa-4.0")
PIPELINE_TAGS = {"tagging": "token-classification", "classification": "text-classification"}


@dataclass(frozen=True)
class DataSource:
    """A dataset a model learnt from: its name, source repository, licence (hub identifier) and hub id."""

    name: str
    source: str
    license: str | None
    hub_id: str | None
    note: str = ""


SOURCES = {
    "ud_romanian_rrt": DataSource(
        "UD Romanian RRT",
        "UniversalDependencies/UD_Romanian-RRT",
        "cc-by-sa-4.0",
        "universal_dependencies",
        "the train file is rebuilt from racai-ai/Rodna's copy of RRT, a GPL-3.0 repository",
    ),
    "ronec": DataSource("RONEC", "dumitrescustefan/ronec", "mit", "ronec"),
    "laroseda": DataSource("LaRoSeDa", "ancatache/LaRoSeDa", "cc-by-nc-sa-4.0", "laroseda", "non-commercial"),
    "moroco": DataSource(
        "MOROCO (or its VarDial 2019 MRC set)", "butnaruandrei/MOROCO", "cc-by-nc-sa-4.0", "moroco", "non-commercial"
    ),
    "ro_sts": DataSource("RO-STS", "dumitrescustefan/RO-STS", "cc-by-sa-4.0", "ro_sts"),
}
TASK_SOURCES = {
    "upos": "ud_romanian_rrt",
    "xpos": "ud_romanian_rrt",
    "ner": "ronec",
    "sapn": "laroseda",
    "sar": "laroseda",
    "di": "moroco",
    "sts": "ro_sts",
}


# ------------------------------------------------------------------------------------------- sources
def hub_id(path: str) -> str | None:
    """`path` itself when it names a hub repository (owner/name, not a local folder), else None."""
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        return None
    return path


def shown_path(path: str, run_dir: str | Path) -> str:
    """A local path (absolute or existing) relative to the run folder, in POSIX form; a hub id or name as it is."""
    local = Path(path).expanduser()
    if not (local.is_absolute() or local.exists()):
        return path
    return Path(os.path.relpath(local.absolute(), Path(run_dir).absolute())).as_posix()


def card_license(folder: str | Path) -> str | None:
    """The `license` of the model card in a local model folder, None without one."""
    card = Path(folder) / CARD_FILE
    if not card.is_file():
        return None
    return ModelCard.load(card).data.license


def model_license(path: str) -> str | None:
    """The licence of a model: a known hub teacher's, or a local folder's card's; None when unknown."""
    if hub_id(path) is not None:
        return TEACHER_LICENSES.get(path)
    return card_license(Path(path).expanduser())


def task_source(task: str) -> DataSource:
    """The dataset of a task: a built-in task's source, or a declared task's dataset (licence unknown)."""
    if task in ktasks.KINDS:  # fine-tuned on a dataset passed in: nothing known about it
        return DataSource("a dataset passed to kdlib", "not recorded", None, None)
    spec = ktasks.get_task(task)
    if spec.builtin:
        return SOURCES[TASK_SOURCES[spec.name]]
    name = spec.options.get("name") if spec.format == "datasets" else None
    return DataSource(spec.dataset or task, str(name or "declared task files"), None, name)


def corpus_sources(corpus: str | None) -> list[DataSource]:
    """The datasets a distillation corpus is made of: a corpus mode reads the train splits of the active tasks."""
    if corpus not in kcorpus.MODES:
        return []
    return list(dict.fromkeys(task_source(t) for t in ktasks.task_names()))


def summary_license(licenses: Sequence[str | None]) -> str:
    """The most restrictive of the licences; "other" when one is unknown or outside LICENSE_ORDER."""
    if not licenses or any(x not in LICENSE_ORDER for x in licenses):
        return "other"
    return max(licenses, key=LICENSE_ORDER.index)


# -------------------------------------------------------------------------------------------- text
def models_section(title: str, models: Sequence[tuple[str, str]], run_dir: str | Path) -> str:
    """A Markdown list of models (name, hub id or folder) with their licences."""
    lines = [f"## {title}"]
    for name, path in models:
        if hub_id(path) is None:
            where = f"local folder `{shown_path(path, run_dir)}` (relative to the run folder: trained in this run)"
            unknown = "none recorded in the folder's card"
        else:
            where = f"[`{path}`](https://huggingface.co/{path})"
            unknown = "not stated here: see the teacher's card on the hub"
        lic = model_license(path) or unknown
        lines.append(f"- `{name}`: {where}; licence: {lic}")
    return "\n".join(lines)


def data_section(sources: Sequence[DataSource]) -> str:
    """A Markdown list of the datasets, their sources and licences (empty without datasets)."""
    if not sources:
        return ""
    lines = ["## Data and its licences"]
    for s in sources:
        note = f" ({s.note})" if s.note else ""
        lic = s.license or "see the dataset's own terms"
        lines.append(f"- {s.name}: `{s.source}`; licence: {lic}{note}")
    return "\n".join(lines)


def license_note(license: str) -> str:
    """What the `license` field means here."""
    return (
        f"The `license` field (`{license}`) summarises the licences of the inputs above, the most restrictive one "
        '("other" when one is not known); it is not legal advice: the terms of each model and dataset apply.'
    )


def render(
    *,
    body: str,
    models: Sequence[tuple[str, str]],
    models_title: str,
    run_dir: str | Path,
    sources: Sequence[DataSource],
    pipeline_tag: str,
    tags: Sequence[str],
    model_name: str | None = None,
    eval_results: Sequence[EvalResult] = (),
) -> str:
    """The card text: ModelCardData metadata, then `body`, the models' and the data's licences."""
    licenses = [model_license(p) for _, p in models] + [s.license for s in sources]
    bases = [h for _, p in models if (h := hub_id(p)) is not None]
    data = ModelCardData(
        language="ro",
        license=summary_license(licenses),
        base_model=bases or None,
        datasets=[s.hub_id for s in sources if s.hub_id] or None,
        pipeline_tag=pipeline_tag,
        library_name="transformers",
        tags=list(tags),
        model_name=model_name if eval_results else None,
        eval_results=list(eval_results) or None,
    )
    parts = [body.strip(), models_section(models_title, models, run_dir), data_section(sources)]
    parts.append(license_note(data.license))
    text = "\n\n".join(p for p in parts if p)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}\n"))


def eval_results(task: str, kind: str, test: Mapping[str, Any], *, split: str = "test") -> list[EvalResult]:
    """model-index results of a fine-tuned task model: its test metrics (the headline `score` left out, as
    it repeats one of them)."""
    source = task_source(task)
    return [
        EvalResult(
            task_type=PIPELINE_TAGS.get(kind, "text-classification"),
            task_name=task,
            dataset_type=source.hub_id or source.name,
            dataset_name=source.name,
            dataset_split=split,
            metric_type=key,
            metric_name=key.replace("_", " "),
            metric_value=float(value),
        )
        for key, value in test.items()
        if key != "score" and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def write_card(folder: str | Path, text: str) -> Path:
    """Write `text` as the folder's README.md (via a temporary file, then renamed)."""
    path = Path(folder) / CARD_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- hub
def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, message: str | None = None) -> str:
    """Create the hub model repository `repo_id` (if needed) and upload `folder` to it; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json): nothing to push")
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=message or f"kdlib: upload {folder.name}",
        ignore_patterns=[".*"],
    )
    return str(getattr(info, "commit_url", info))


def push_targets(folders: Sequence[tuple[str, Path]], repo_id: str) -> list[tuple[Path, str]]:
    """(folder, repository) pairs: one folder goes to `repo_id`, several to `repo_id`-<name>."""
    if len(folders) == 1:
        return [(folders[0][1], repo_id)]
    return [(folder, f"{repo_id}-{name}") for name, folder in folders]
