"""The environment record of results: git state, package versions, machine."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import orgaseg
from orgaseg.environment import VERSIONED, environment_record, git_state, machine_description

SOURCE = Path(orgaseg.__file__).parent


def _in_git_checkout(path: Path) -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, check=False)
    return done.returncode == 0


def test_record_of_this_checkout():
    if not _in_git_checkout(SOURCE):
        pytest.skip("orgaseg is not imported from a git checkout here")
    record = environment_record()
    git = record["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", git["commit"])
    expected = subprocess.run(["git", "-C", str(SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert git["commit"] == expected
    assert isinstance(git["dirty"], bool)
    assert git["branch"] is None or isinstance(git["branch"], str)
    # the record goes into results.json as it is
    assert json.loads(json.dumps(record)) == record


def test_outside_a_checkout_gives_none(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "branch": None}
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    assert environment_record(a_file)["git"] == {"commit": None, "dirty": None, "branch": None}


def test_dirty_tracks_modified_files_not_untracked_ones(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q", "-b", "work")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "first")
    state = git_state(tmp_path)
    assert state["dirty"] is False and state["branch"] == "work"
    (tmp_path / "results.json").write_text("{}")  # a fresh result is not a change to the code
    assert git_state(tmp_path)["dirty"] is False
    # nor is a committed result rewritten (by this run or one beside it in the same checkout)
    committed = tmp_path / "benchmarks" / "results" / "run"
    committed.mkdir(parents=True)
    (committed / "results.json").write_text("{}")
    git("add", "benchmarks")
    git("commit", "-q", "-m", "a result")
    (committed / "results.json").write_text('{"new": 1}')
    assert git_state(tmp_path / "benchmarks")["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path / "benchmarks")["dirty"] is True


def test_versions():
    versions = environment_record()["versions"]
    assert set(versions) == {"orgaseg", "python", *VERSIONED}
    assert versions["orgaseg"] == orgaseg.__version__
    assert versions["python"] == ".".join(str(v) for v in sys.version_info[:3])
    import numpy

    assert versions["numpy"] == numpy.__version__


def test_machine():
    import torch

    machine = machine_description()
    assert machine["cores"] >= 1
    assert machine["cpu"] and machine["platform"]
    # torch is loaded in this process, so its threads and GPU are reported
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
