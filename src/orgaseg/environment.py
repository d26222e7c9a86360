"""Where a result came from: the code's git state, the package versions and the machine.

Every ``results.json`` carries :func:`environment_record` so that a number can
be traced to the commit that produced it (and to whether that commit was the
whole story: a dirty tree means it was not), to the library versions and to
the hardware it ran on.

Nothing here imports a heavy package: versions are read from the installed
distributions' metadata, and torch is asked about threads and GPUs only when
the process has already loaded it (a run that never loaded torch used no GPU).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: Distributions whose versions a result records (``python`` is the interpreter's).
VERSIONED = ("torch", "numpy", "scipy", "scikit-learn", "scikit-image", "zarr", "dask")

#: Where benchmarks write their results: rewriting a committed result there is output, not a change to the code.
RESULTS_FOLDER = "benchmarks/results"

#: Seconds a git command may take; a slow or hanging git must not hold up a benchmark.
GIT_TIMEOUT_S = 5.0


def environment_record(path: str | Path | None = None) -> dict:
    """The git state of the source, the versions of the main packages and the machine.

    Parameters
    ----------
    path : str or Path, optional
        A file or folder inside the git checkout to describe (default: the
        folder of the ``orgaseg`` package in use, so the record names the code
        that actually ran, wherever the command was started from).

    Returns
    -------
    dict
        ``{"git": {"commit", "dirty", "branch"}, "versions": {...}, "machine": {...}}``.
        The git values are None when ``path`` is not in a git checkout or git
        is unavailable; a version is None when the package is not installed.

    Examples
    --------
    >>> record = environment_record()
    >>> sorted(record)
    ['git', 'machine', 'versions']
    """
    if path is None:
        path = Path(__file__).parent
    return {"git": git_state(path), "versions": package_versions(), "machine": machine_description()}


def git_state(path: str | Path) -> dict:
    """Commit, dirtiness and branch of the git checkout holding ``path``.

    Parameters
    ----------
    path : str or Path
        A file or folder inside the checkout.

    Returns
    -------
    dict
        ``commit`` (40 hex digits), ``dirty`` (True when tracked files differ
        from the commit; untracked files and the results under
        :data:`RESULTS_FOLDER`, which a run beside this one may have rewritten,
        do not count)
        and ``branch`` (None on a detached head). All None outside a checkout
        or without git.
    """
    folder = Path(path)
    if not folder.is_dir():
        folder = folder.parent
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                  f":(top,exclude){RESULTS_FOLDER}")
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "branch": None if branch in (None, "HEAD") else branch,
    }


def _git(folder: Path, *args: str) -> str | None:
    """Stripped stdout of ``git -C folder args``; None when git fails, is missing or times out."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def package_versions() -> dict:
    """Versions of orgaseg, python and :data:`VERSIONED` (None for a package not installed).

    orgaseg's is the version of the imported source, which may run from a
    checkout without being installed.
    """
    from orgaseg import __version__

    versions = {"orgaseg": __version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_description() -> dict:
    """CPU model, core count, platform, and torch's threads and GPU when torch is loaded.

    Returns
    -------
    dict
        ``cpu``, ``cores``, ``platform``, ``python``, ``torch_threads`` and
        ``gpu`` (the last two None when this process has not imported torch;
        ``gpu`` also None when torch sees no CUDA device).
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: keep what platform says
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch_threads": None, "gpu": None}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info
