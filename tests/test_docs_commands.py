"""Every shell command of README.md and book/*.md is checked, so a broken example fails the build.

Commands come from the ```bash / ```sh / ```shell / ```console blocks (continuations joined, comments cut,
`for ... done` loops kept whole) and the ``%pip`` lines of ```python blocks. Each falls in one class:

* cheap at smoke scale, run for real (in-process, `python -m kdlib` is :func:`kdlib.cli.main`): ``--version``,
  ``data --check``, ``run --list``, ``readme --check``, ``readme --run`` and ``compare`` (on copies of the smoke
  run ``$KDLIB_RUN_DIR``, skipped when it is absent; ``readme`` writes a copy of the README);
* expensive, validated without running: ``make T`` by ``make -n T`` (and the kdlib commands it would run, by the
  rules below); ``python -m kdlib run`` with ``--show``; the other kdlib commands and ``torchrun`` by their own
  argument parsers, stopped before they run; ``papermill`` with ``--prepare-only``, its injected parameters
  checked against the notebook's declared parameters and their defaults' types;
* install lines (``pip``, ``%pip``, ``git clone``, ``apt-get``) for shape, against kdlib.colab and requirements.txt.

A command that fits no class fails as "unclassified command": add a rule here when the docs gain one.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from kdlib import cli, colab
from kdlib.book import commands, runner

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([^\s`]*)")
OPTIONAL = re.compile(r"(?<=\s)\[(-[^\[\]]*)\]")  # a synopsis' optional group, e.g. [--only 04-evaluate]
PLACEHOLDERS = {"N": "2", "key=value": "seed=1"}  # a synopsis' metavariables, as a reader would fill them in
CHEAP_KDLIB = {("--version",), ("data", "--check"), ("run", "--list"), ("readme", "--check")}
PARSE_ONLY_KDLIB = {"corpus", "pretrain-teacher", "distill", "finetune", "loyalty", "bench", "task-distill", "readme"}
MAKE_ENV_DROP = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # under `make pytest`: the outer make's, not the docs'


@dataclass(frozen=True)
class DocCommand:
    """One command of the docs: where it is and its text (comments and continuations removed)."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


@dataclass
class Ctx:
    """What a check may use: pytest's request (for the smoke-run fixture), capsys and a scratch folder."""

    request: pytest.FixtureRequest
    capsys: pytest.CaptureFixture
    tmp: Path


# --------------------------------------------------------------------------- extraction


def fences(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first body line, body lines) of every fenced block of a Markdown text."""
    lang, start, body = None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body = match.group(2).lower(), no + 1, []
        elif lang is not None and match and not match.group(2):
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def strip_comment(line: str) -> str:
    """The line without its shell comment (a # that starts a word outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def logical_lines(body: list[str], first: int, console: bool) -> Iterator[tuple[int, str]]:
    """(line number, command) of a shell block: continuations joined, comments cut; console blocks: `$ ` lines."""
    pending, start = "", first
    for no, line in enumerate(body, first):
        if console and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        start, line = (start, line.lstrip()) if pending else (no, line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].rstrip() + " "
            continue
        text, pending = strip_comment(pending + line).strip(), ""
        if text:
            yield start, text


def _opens_loop(text: str) -> bool:
    """The line starts a `for`/`while` loop that it does not close."""
    words = text.split()
    return bool(words) and words[0] in {"for", "while"} and words[-1] != "done"


def _rel(path: Path) -> str:
    """The path relative to the repository (its name when outside it)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def shell_commands(path: Path) -> list[DocCommand]:
    """The commands of a Markdown file's shell blocks, a loop (for ... done) as one command."""
    out, loop, rel = [], None, _rel(path)
    for lang, first, body in fences(path.read_text(encoding="utf-8")):
        if lang not in SHELL_FENCES:
            continue
        for no, text in logical_lines(body, first, console=lang == "console"):
            if loop is not None:
                loop = replace(loop, text=f"{loop.text}\n{text}")
                if text == "done" or text.endswith("; done"):
                    out, loop = [*out, loop], None
            elif _opens_loop(text):
                loop = DocCommand(rel, no, text)
            else:
                out.append(DocCommand(rel, no, text))
    assert loop is None, f"{rel}:{loop.line}: a loop without its `done`"
    return out


def magic_commands(path: Path) -> list[DocCommand]:
    """The `%pip` / `!pip` lines of a Markdown file's python blocks (notebook cells)."""
    rel, out = _rel(path), []
    for lang, first, body in fences(path.read_text(encoding="utf-8")):
        if lang in {"python", "ipython", "py"}:
            out += [DocCommand(rel, no, ln.strip()) for no, ln in enumerate(body, first) if ln.startswith(("%", "!"))]
    return out


def doc_commands() -> list[DocCommand]:
    """Every command of README.md and book/*.md, in file order."""
    return [c for path in DOCS for c in shell_commands(path) + magic_commands(path)]


# --------------------------------------------------------------------------- helpers


def _fail(cmd: DocCommand, why: str) -> None:
    """Fail the test naming the file, line and command."""
    pytest.fail(f"{cmd}\n  -> {why}", pytrace=False)


def variants(text: str) -> list[list[str]]:
    """The words of a synopsis without its optional [--groups] and with all of them, metavariables filled in."""
    forms = {OPTIONAL.sub("", text), OPTIONAL.sub(r"\1", text)}
    return [[PLACEHOLDERS.get(w, w) for w in shlex.split(form)] for form in sorted(forms)]


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading VAR=value assignments of a command, and its remaining words."""
    env = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key], words = value, words[1:]
    return env, words


def split_redirect(words: list[str]) -> tuple[list[str], str | None]:
    """A command's words without a trailing `> FILE`, and FILE."""
    if len(words) > 2 and words[-2] == ">":
        return words[:-2], words[-1]
    return words, None


def kdlib_main(args: list[str], ctx: Ctx) -> tuple[int, str, str]:
    """`python -m kdlib ARGS` in-process: exit status, stdout, stderr."""
    ctx.capsys.readouterr()
    code = cli.main(args)
    out, err = ctx.capsys.readouterr()
    return code, out, err


class _Parsed(Exception):
    """Raised by the patched parse_args once a command's options parsed."""


def parse_only(cmd: DocCommand, args: list[str], ctx: Ctx) -> None:
    """A kdlib command's options parse with its own argparse parser; it is stopped before it runs."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: object, **k: object) -> None:
        """Parse as argparse does (exit 2 on a bad option), then stop the command."""
        original(self, *a, **k)
        raise _Parsed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            code, _, err = kdlib_main(args, ctx)
        except _Parsed:
            return
        except SystemExit as exc:
            _fail(
                cmd, f"`kdlib {' '.join(args)}` rejected its options (exit {exc.code}): {ctx.capsys.readouterr().err}"
            )
    _fail(cmd, f"`kdlib {' '.join(args)}` returned {code} before parsing its options: {err.strip()}")


# --------------------------------------------------------------------------- the smoke run


@pytest.fixture(scope="module")
def run_copies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of the smoke run ($KDLIB_RUN_DIR, default runs/smoke): the published run and a rerun."""
    src = Path(os.environ.get("KDLIB_RUN_DIR", "runs/smoke"))
    src = src if src.is_absolute() else ROOT / src
    if not (src / "run_summary.json").is_file():
        pytest.skip(f"no smoke run at {src} (run `make smoke` or set KDLIB_RUN_DIR): needed to run this command")
    base = tmp_path_factory.mktemp("docs-runs")
    return shutil.copytree(src, base / "smoke-a"), shutil.copytree(src, base / "smoke-b")


def with_run_copies(args: list[str], ctx: Ctx) -> list[str]:
    """The command's run folders (runs/...) replaced by the smoke run's copies, in order of appearance."""
    copies = list(ctx.request.getfixturevalue("run_copies"))
    seen: dict[str, str] = {}
    for word in args:
        if word.startswith("runs/") and word not in seen:
            seen[word] = str(copies.pop(0))
    return [seen.get(w, w) for w in args]


# --------------------------------------------------------------------------- kdlib commands


def check_kdlib(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """`python -m kdlib ...`: cheap ones run, `run` with --show, the others parsed only."""
    for form in variants(cmd.text):
        args, target = split_redirect(split_env(form)[1][3:])
        if tuple(args) in CHEAP_KDLIB:
            check_cheap(cmd, args, ctx)
        elif args[0] == "readme" and "--run" in args:
            check_readme_run(cmd, args, ctx)
        elif args[0] == "compare":
            check_compare(cmd, args, target, ctx)
        elif args[0] == "run":
            check_run_show(cmd, args, ctx)
        elif args[0] in PARSE_ONLY_KDLIB:
            parse_only(cmd, args, ctx)
        else:
            _fail(cmd, "unclassified command (python -m kdlib): add a rule to tests/test_docs_commands.py")


def check_cheap(cmd: DocCommand, args: list[str], ctx: Ctx) -> None:
    """Run it: exit 0 (`readme --check`: 0 fresh or 1 stale, both documented; 2 is an error)."""
    code, out, err = kdlib_main(args, ctx)
    allowed = {0, 1} if args == ["readme", "--check"] else {0}
    if code not in allowed or not out.strip():
        _fail(cmd, f"exit {code}, stdout {out[-300:]!r}, stderr {err[-500:]!r}")


def check_readme_run(cmd: DocCommand, args: list[str], ctx: Ctx) -> None:
    """Run it on a copy of the smoke run, writing a copy of the README (never the real one)."""
    readme = shutil.copy(ROOT / "README.md", ctx.tmp / "README.md")
    assert "--readme" not in args, "the docs' command names its own README: handle it here"
    code, out, err = kdlib_main([*with_run_copies(args, ctx), "--readme", str(readme)], ctx)
    if code != 0 or Path(readme).read_text() == (ROOT / "README.md").read_text():
        _fail(cmd, f"exit {code}, README copy unchanged or not written: {err[-500:]}")


def check_compare(cmd: DocCommand, args: list[str], target: str | None, ctx: Ctx) -> None:
    """Run it on two copies of the smoke run: no verdict changes (exit 0); --json prints JSON."""
    code, out, err = kdlib_main(with_run_copies(args, ctx), ctx)
    if code != 0:
        _fail(cmd, f"exit {code} on two copies of one run: {err[-500:]}")
    if "--json" in args:
        (ctx.tmp / (target or "compare.json")).write_text(out)
        json.loads(out)


def check_run_show(cmd: DocCommand, args: list[str], ctx: Ctx) -> None:
    """`run` with --show (from a scratch folder): exit 0, a plan of steps, and no run folder made."""
    out_dir = Path(args[args.index("--out") + 1]) if "--out" in args else None
    existed = out_dir is not None and out_dir.is_absolute() and out_dir.exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ctx.tmp)
        code, out, err = kdlib_main([*args, "--show"], ctx)
        made = sorted(p.name for p in ctx.tmp.iterdir())
    plan = yaml.safe_load(out) if code == 0 else None
    if code != 0 or not isinstance(plan, dict) or not all(isinstance(v, dict) for v in plan.values()):
        _fail(cmd, f"`--show`: exit {code}, stdout {out[-300:]!r}, stderr {err[-500:]!r}")
    if made or (out_dir is not None and out_dir.is_absolute() and out_dir.exists() and not existed):
        _fail(cmd, f"`--show` created {made or out_dir}")
    if "--only" in args and len(plan) != 1:
        _fail(cmd, f"`--show --only` planned {list(plan)}")


# --------------------------------------------------------------------------- make, torchrun, papermill, loops


def check_make(cmd: DocCommand, words: list[str], env: dict[str, str], ctx: Ctx) -> None:
    """`make T`: `make -n T` succeeds, and the kdlib commands it would run pass the kdlib rules (--show, parsing)."""
    base = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}
    proc = subprocess.run(
        ["make", "-n", *words[1:]], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        _fail(cmd, f"`make -n` failed: {proc.stderr[-800:]}")
    for line in proc.stdout.splitlines():
        kd = shlex.split(line) if " -m kdlib " in line else []
        if kd:
            args = kd[kd.index("kdlib") + 1 :]
            sub = replace(cmd, text=f"{cmd.text} -> {line.strip()}")
            check_run_show(sub, args, ctx) if args[0] == "run" else parse_only(sub, args, ctx)


def check_torchrun(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """`torchrun ... -m kdlib CMD`: torchrun's own parser accepts it, then CMD's parser (not run)."""
    from torch.distributed.run import get_args_parser

    try:
        ns = get_args_parser().parse_args(words[1:])
    except SystemExit as exc:
        _fail(cmd, f"torchrun rejected its options (exit {exc.code}): {ctx.capsys.readouterr().err}")
    if not (ns.module and ns.training_script == "kdlib"):
        _fail(cmd, "expected `torchrun [options] -m kdlib COMMAND ...`")
    parse_only(cmd, list(ns.training_script_args), ctx)


def injected_parameters(notebook: Path) -> dict[str, object]:
    """The values papermill injected into a prepared notebook's injected-parameters cell."""
    cells = json.loads(notebook.read_text())["cells"]
    src = next("".join(c["source"]) for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    tree = ast.parse(src)
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def _same_kind(value: object, default: object) -> bool:
    """A passed value fits a default: the same type, any number for a number, anything for a None default."""
    number = (int, float)
    if default is None or type(value) is type(default):
        return True
    both_numbers = (
        isinstance(value, number) and isinstance(default, number) and bool not in {type(value), type(default)}
    )
    return both_numbers or (isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)))


def check_papermill(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """papermill IN OUT ...: prepared (--prepare-only, nothing executed); each injected parameter is declared
    by the notebook and has its default's type (a list passed with -p arrives as a string: a failure)."""
    import papermill
    from papermill import cli as pm_cli

    args = list(words[1:])
    src, args[1] = ROOT / args[0], str(ctx.tmp / Path(args[1]).name)
    args[0] = str(src)
    try:
        pm_cli.papermill.main(args=[*args, "--prepare-only"], standalone_mode=False)
    except Exception as exc:  # click's usage errors and papermill's own
        _fail(cmd, f"papermill --prepare-only failed: {type(exc).__name__}: {exc}")
    declared = papermill.inspect_notebook(str(src))
    for name, value in injected_parameters(Path(args[1])).items():
        if name not in declared:
            _fail(cmd, f"{src.name} declares no parameter {name!r}; it declares {sorted(declared)}")
        default = ast.literal_eval(declared[name]["default"])
        if not _same_kind(value, default):
            _fail(cmd, f"{name} arrives as {type(value).__name__} {value!r}; its default is {default!r} (use -y)")


def check_loop(cmd: DocCommand, ctx: Ctx) -> None:
    """A `for VAR in GLOB; do ...; done` loop: bash parses it, and its body's commands pass their own rules."""
    proc = subprocess.run(["bash", "-n", "-c", cmd.text], capture_output=True, text=True)
    if proc.returncode != 0:
        _fail(cmd, f"bash -n: {proc.stderr.strip()}")
    match = re.match(r"for (\w+) in (\S+)", cmd.text)
    if not match:
        _fail(cmd, "unclassified command (a loop other than `for VAR in GLOB`)")
    sample = match.group(2).replace("*", "example")
    for no, body in enumerate(cmd.text.splitlines()[1:-1], cmd.line + 1):
        text = re.sub(rf'"?\$\{{?{match.group(1)}\}}?"?', sample, body.strip())
        check_command(DocCommand(cmd.file, no, text), ctx)


# --------------------------------------------------------------------------- install lines (shape only)


def requirement_pins() -> dict[str, str]:
    """name -> version of requirements.txt's exact pins."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (ROOT / "requirements.txt").read_text(), re.M)
    return {name.lower(): version for name, version in pins}


def check_pip(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """`%pip install` is kdlib.colab's install command; `pip install` pins agree with requirements.txt."""
    if words[0] == "%pip":
        if cmd.text != colab.install_command():
            _fail(cmd, f"kdlib.colab.install_command() is {colab.install_command()}")
        return
    if words[1] != "install":
        _fail(cmd, "unclassified command (pip other than install)")
    pins, it = requirement_pins(), iter(words[2:])
    for word in it:
        if word in {"-r", "-e", "-c"}:
            if not (ROOT / next(it)).exists():
                _fail(cmd, f"{word} names a missing path")
        elif "==" in word and pins.get(word.split("==")[0].lower(), word.split("==")[1]) != word.split("==")[1]:
            _fail(cmd, f"{word} disagrees with requirements.txt")
        elif "git+" in word and word != colab.pip_requirement():
            _fail(cmd, f"expected {colab.pip_requirement()}")


def check_git_clone(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """`git clone URL`: the repository is kdlib.colab.REPOSITORY_URL."""
    urls = [w for w in words[2:] if "://" in w]
    if [u.removesuffix(".git") for u in urls] != [colab.REPOSITORY_URL]:
        _fail(cmd, f"expected a clone of {colab.REPOSITORY_URL}")


def check_apt(cmd: DocCommand, words: list[str], ctx: Ctx) -> None:
    """`apt-get update|install PKGS`: the packages are those the Makefile installs."""
    makefile = (ROOT / "Makefile").read_text()
    pkgs = [w for w in words[2:] if not w.startswith("-")]
    if words[1] not in {"update", "install"} or any(f"install -y -qq {p}" not in makefile for p in pkgs):
        _fail(cmd, "expected `apt-get update` or `apt-get install` of the Makefile's packages")


# --------------------------------------------------------------------------- dispatch


def rule(words: list[str]) -> str | None:
    """The class of a command by its first words (None: unclassified)."""
    head = words[:3]
    rules: list[tuple[Callable[[], bool], str]] = [
        (lambda: head == ["python", "-m", "kdlib"], "kdlib"),
        (lambda: head[:1] == ["make"], "make"),
        (lambda: head[:1] == ["torchrun"], "torchrun"),
        (lambda: head[:1] == ["papermill"], "papermill"),
        (lambda: head[:1] in (["pip"], ["%pip"]) or head == ["python", "-m", "pip"], "pip"),
        (lambda: head[:2] == ["git", "clone"], "git-clone"),
        (lambda: head[:1] in (["apt-get"], ["apt"]), "apt"),
    ]
    return next((name for test, name in rules if test()), None)


def check_command(cmd: DocCommand, ctx: Ctx) -> None:
    """Check one documented command by its class; one that fits no class fails as unclassified."""
    if "\n" in cmd.text:
        return check_loop(cmd, ctx)
    env, words = split_env(shlex.split(cmd.text))
    kind = rule(words)
    if kind == "pip" and words[:3] == ["python", "-m", "pip"]:
        words = ["pip", *words[3:]]
    checks: dict[str, Callable[[], None]] = {
        "kdlib": lambda: check_kdlib(cmd, words, ctx),
        "make": lambda: check_make(cmd, words, env, ctx),
        "torchrun": lambda: check_torchrun(cmd, words, ctx),
        "papermill": lambda: check_papermill(cmd, words, ctx),
        "pip": lambda: check_pip(cmd, words, ctx),
        "git-clone": lambda: check_git_clone(cmd, words, ctx),
        "apt": lambda: check_apt(cmd, words, ctx),
    }
    if kind is None:
        _fail(cmd, "unclassified command: add a rule to tests/test_docs_commands.py")
    checks[kind]()


# --------------------------------------------------------------------------- tests

COMMANDS = doc_commands()


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.file}:{c.line}" for c in COMMANDS])
def test_documented_command(
    cmd: DocCommand, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """Every command of the docs passes the check of its class."""
    check_command(cmd, Ctx(request, capsys, tmp_path))


def test_the_docs_have_commands() -> None:
    """The extraction finds the README's and the reproduce page's commands (an empty list would test nothing)."""
    files = {c.file for c in COMMANDS}
    assert {"README.md", "book/reproduce.md"} <= files
    assert any(c.text.startswith("papermill ") for c in COMMANDS)


def test_extraction_joins_continuations_cuts_comments_and_keeps_loops(tmp_path: Path) -> None:
    """Continuations, comments (not inside quotes), console prompts and loops are read as a shell would."""
    md = tmp_path / "probe.md"
    md.write_text(
        "text\n```bash\nmake test  # comment\npython -m kdlib run \\\n  --profile smoke\n"
        "echo '# kept'\nfor f in a/*; do\n  make -n \"$f\"\ndone\n```\n"
        "```console\n$ python -m kdlib --version\nkdlib 0.1.0\n```\n```python\n%pip install x\n```\n"
    )
    found = [(c.line, c.text) for c in shell_commands(md) + magic_commands(md)]
    assert found == [
        (3, "make test"),
        (4, "python -m kdlib run --profile smoke"),
        (6, "echo '# kept'"),
        (7, 'for f in a/*; do\nmake -n "$f"\ndone'),
        (12, "python -m kdlib --version"),
        (16, "%pip install x"),
    ]


def test_an_unknown_command_is_unclassified(request: pytest.FixtureRequest, capsys, tmp_path: Path) -> None:
    """A command no rule covers fails, naming file and line, so the docs cannot drift past the test."""
    with pytest.raises(pytest.fail.Exception, match=r"README.md:7: frobnicate --now\n.*unclassified command"):
        check_command(DocCommand("README.md", 7, "frobnicate --now"), Ctx(request, capsys, tmp_path))


def test_papermill_list_passed_with_p_fails(request: pytest.FixtureRequest, capsys, tmp_path: Path) -> None:
    """The old reproduce-page example (-p tasks '["sts"]': papermill passes a string) is caught."""
    text = "papermill notebooks/04-evaluate.ipynb /tmp/x.ipynb -p run_dir runs/smoke -p tasks '[\"sts\"]'"
    with pytest.raises(pytest.fail.Exception, match=r"tasks arrives as str"):
        check_command(DocCommand("book/reproduce.md", 47, text), Ctx(request, capsys, tmp_path))


def test_a_bad_option_fails_parsing(request: pytest.FixtureRequest, capsys, tmp_path: Path) -> None:
    """A kdlib command with an option its parser lacks fails without running."""
    with pytest.raises(pytest.fail.Exception, match=r"rejected its options"):
        check_command(
            DocCommand("README.md", 1, "python -m kdlib finetune --no-such-option"), Ctx(request, capsys, tmp_path)
        )


# --------------------------------------------------------------------------- run --show


def test_run_show_prints_the_runners_resolved_parameters(tmp_path: Path, capsys) -> None:
    """`run --show` prints what the runner would pass each step (profile + --set), creating nothing."""
    out = tmp_path / "never"
    code = commands.run(
        ["--profile", "smoke", "--out", str(out), "--set", "seed=7", "--set", "04.tasks=[sts]", "--show"]
    )
    plan = yaml.safe_load(capsys.readouterr().out)
    prof = runner.load_profile("smoke")
    steps = runner.list_steps()
    params = runner.resolve_parameters(prof, steps, out.resolve(), {"seed": 7, "04.tasks": ["sts"]})
    assert code == 0 and not out.exists()
    assert list(plan) == [p.stem for p in runner._profile_steps(prof, runner.DEFAULT_NOTEBOOKS_DIR)]
    assert plan["04-evaluate"]["tasks"] == ["sts"] and plan["04-evaluate"]["run_dir"] == "<run>"
    for name, shown in plan.items():
        assert shown == commands._shown_parameters(params[name], out.resolve())
        assert str(out) not in json.dumps(shown)


def test_run_show_only_one_step(capsys) -> None:
    """`--show --only STEP` prints that step alone."""
    assert commands.run(["--profile", "cpu", "--only", "04", "--show", "--out", "/nonexistent/run"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == ["04-evaluate"]


@pytest.mark.parametrize(
    "args", [["--profile", "nope"], ["--profile", "smoke", "--set", "nope=1"], ["--profile", "smoke", "--only", "99"]]
)
def test_run_show_errors_are_one_line_exit_2(args: list[str], capsys) -> None:
    """A bad profile, --set or --only: one line on stderr, exit 2, nothing printed on stdout."""
    assert commands.run([*args, "--show"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
