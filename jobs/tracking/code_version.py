"""Which code ran: the project's git commit (what runs and records name) and a digest of the `jobs` package
itself (what every Ray node is checked against, so a run never records one version and executes another).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `jobs` package: what a remote cluster is shipped
CODE_VERSION_ENV = "SCORE_CODE_VERSION"  # set by `score submit`: the project travels without its .git


def code_version(root: str | Path | None = None) -> str:
    """The git commit of the code that ran, `-dirty` when tracked files under `root` (default: the project
    holding this package) differ from it, else the package version. Untracked files do not count: a report
    written into the project by `score validate --report` would otherwise mark every later run dirty."""
    if root is None and os.environ.get(CODE_VERSION_ENV):  # a submitted job: the submitter's checkout
        return os.environ[CODE_VERSION_ENV]
    root = Path(root) if root is not None else PACKAGE_DIR.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "score-jobs " + version("score-jobs")
    except PackageNotFoundError:
        return "unknown"


def package_digest() -> str:
    """sha256 over the `jobs` package's source files: the same wherever the same code is installed."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
