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
