"""The examples in the docstrings run and print what they say (numpydoc ``Examples`` sections)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import orgaseg

SOURCE = Path(orgaseg.__file__).parent


def _modules_with_examples() -> list[str]:
    """The orgaseg modules whose source holds a doctest prompt (found without importing them)."""
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(SOURCE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_public_entry_points_have_examples():
    assert {"orgaseg.segmentation", "orgaseg.evaluation.report", "orgaseg.io.readers", "orgaseg.io.volume",
            "orgaseg.organelles.naming", "orgaseg.organelles.instances", "orgaseg.organelles.measure"} <= set(MODULES)


def test_the_public_names_are_what_dir_lists_and_each_has_a_docstring():
    # a notebook's tab completion shows dir(orgaseg): the public names, not the module's own imports
    public = [name for name in dir(orgaseg) if not name.startswith("_")]
    assert set(orgaseg.__all__) - {"__version__"} <= set(public)
    assert not {"annotations", "importlib"} & set(public)
    assert issubclass(orgaseg.OrgasegWarning, UserWarning)  # caught or filtered by its class, as the README says
    assert all(getattr(orgaseg, name).__doc__ for name in orgaseg.__all__ if name != "__version__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name}: no example was found"
    assert result.failed == 0, "".join(report)
