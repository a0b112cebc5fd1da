"""Command-line dispatcher: `python -m kdlib <command> ...`.

Each command lives in the module that owns the concept; that module exposes
``cli(argv: list[str]) -> int`` (or the function named after a colon) with its own argparse parser.
Modules are imported lazily so `python -m kdlib --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

from kdlib import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("kdlib.data.load", "check and list the seven evaluation tasks (--check)"),
    "corpus": ("kdlib.data.corpus", "build the unlabeled distillation corpus from the train splits"),
    "pretrain-teacher": ("kdlib.engine.teachers", "train a tokenizer and a small BERT teacher with MLM"),
    "distill": ("kdlib.engine.distill", "distil one or several teachers into one or several students"),
    "finetune": ("kdlib.eval.finetune", "fine-tune and evaluate a model on one task"),
    "loyalty": ("kdlib.eval.loyalty", "label / probability / regression loyalty of a student to its teacher(s)"),
    "bench": ("kdlib.bench.speed", "speed and size benchmark, distillation throughput"),
    "task-distill": (
        "kdlib.studies.task_distill",
        "distil a fine-tuned task teacher into BiLSTM, CNN and small BERT students",
    ),
    "run": ("kdlib.book.commands:run", "run the notebook pipeline for a profile with papermill"),
    "readme": (
        "kdlib.book.commands:readme",
        "write a complete run's headline (scores, claims, cost) into the README; --check: is it stale?",
    ),
    "compare": ("kdlib.book.commands:compare", "compare a rerun with the published run: figures, verdicts, files"),
}


def usage() -> str:
    """The command list `python -m kdlib --help` prints."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m kdlib [--version] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m kdlib <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `python -m kdlib [--version] <command> ...` to the command's module; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"kdlib {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kdlib: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, _, func = COMMANDS[name][0].partition(":")
    return int(getattr(importlib.import_module(module), func or "cli")(rest) or 0)
