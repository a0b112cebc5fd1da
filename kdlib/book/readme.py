"""The README headline's stamp, and whether the headline is still fresh (`python -m kdlib readme --check`).

The headline (written by :func:`kdlib.book.build.update_readme`) carries a stamp: an HTML comment
``<!-- run-stamp: profile=NAME profile-hash=HASH commit=SHA -->`` and a visible line naming the profile, its
hash and the commit. The hash is :func:`kdlib.book.runner.profile_hash` of the run (resolved profile,
``--set`` overrides and the notebooks' code), recorded in its ``run_summary.json``. :func:`check_readme`
recomputes the hash of the stamped profile now: equal means fresh, anything else (or no stamp) stale.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kdlib.book import runner

STAMP_RE = re.compile(r"<!-- run-stamp: profile=(?P<profile>\S+) profile-hash=(?P<hash>\w+) commit=(?P<commit>\S+) -->")


def stamp(summary: dict) -> str:
    """The headline's stamp of a run (from its run_summary.json): the HTML comment and a visible line."""
    commit = summary.get("git_commit", "unknown")[:12] + ("+changes" if summary.get("git_dirty") else "")
    if not summary.get("profile_hash"):
        return "This run recorded no profile hash (it predates them): `kdlib readme --check` calls it stale.\n\n"
    return (
        f"<!-- run-stamp: profile={summary['profile']} profile-hash={summary['profile_hash']} commit={commit} -->\n"
        f"Made at commit `{commit}` with profile `{summary['profile']}` (profile hash `{summary['profile_hash']}`; "
        "`python -m kdlib readme --check` says whether it is still the current one).\n\n"
    )


def check_readme(
    readme: str | os.PathLike, notebooks_dir: str | os.PathLike = runner.DEFAULT_NOTEBOOKS_DIR
) -> tuple[bool, str]:
    """(fresh, one line saying why) for the headline of `readme` against the current profile and notebooks."""
    path = Path(readme)
    found = STAMP_RE.search(path.read_text(encoding="utf-8"))
    if found is None:
        return (
            False,
            f"stale: the headline of {path} records no profile hash (remake it: python -m kdlib readme --run RUN)",
        )
    name, made = found["profile"], found["hash"]
    try:
        now = runner.profile_hash(name, notebooks_dir)
    except (ValueError, FileNotFoundError) as exc:
        return False, f"stale: the headline's profile {name!r} no longer loads ({exc})"
    if now != made:
        return False, (
            f"stale: the headline was made with profile {name} hash {made} (commit {found['commit']}); "
            f"the profile and notebooks now hash to {now}"
        )
    return True, f"fresh: the headline's profile {name} hash {made} (commit {found['commit']}) is the current one"
