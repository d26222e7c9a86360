"""Print the README's reliability table: each fault case, its exit code and the one line it prints.

Usage: python benchmarks/fault_table.py

Runs, through :func:`orgaseg.cli.main` in a temporary folder, the cases the
tests check: the broken inputs of ``tests/test_faults.py`` (as ``segment``),
its unwritable outputs, and the bad command lines of ``tests/test_cli.py``
(``test_bad_input_exits_2_with_one_line``). Temporary paths are shortened to
plain file names; a name that is not UTF-8 shows as the terminal shows it.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_cli  # noqa: E402 (the cases live with their tests)
import test_faults  # noqa: E402

from orgaseg.cli import main  # noqa: E402


class _Folders:
    """What ``tmp_path_factory.mktemp`` gives a module fixture: a new folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.root))


def _run(args: list[str], tmp: Path) -> tuple[int, str]:
    """Exit code and stderr of ``orgaseg ARGS``, with ``tmp`` and its folders cut from the paths."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    message = re.sub(rf"{re.escape(str(tmp))}/(?:[^/\s]+/)*", "", err.getvalue().strip())
    # stderr escapes bytes that are not UTF-8 (backslashreplace): show them the same way
    return code, message.encode("utf-8", "backslashreplace").decode("utf-8")


def _command(args: list[str], tmp: Path) -> str:
    return " ".join(["orgaseg", *(re.sub(rf"{re.escape(str(tmp))}/(?:[^/\s]+/)*", "", a) for a in args)])


def cases(tmp: Path):
    """``(case, exit code, message)`` for every case, each run in a folder of its own."""
    for name, (build, options, _) in test_faults.FAULTS.items():
        folder = Path(tempfile.mkdtemp(dir=tmp))
        yield (name, *_run(["segment", str(build(folder)), "-o", str(folder / "seg.ome.zarr"), "-k", "2",
                            "--quiet", *options], tmp))
    for name, (prepare, _, _) in test_faults.OUTPUT_FAULTS.items():
        folder = Path(tempfile.mkdtemp(dir=tmp))
        raw = test_faults._intact(folder)
        with pytest.MonkeyPatch.context() as monkeypatch:
            output = prepare(folder, monkeypatch)
            yield (name, *_run(["segment", str(raw), "-o", str(output), *test_faults.SEGMENT_OPTIONS], tmp))
    raw, ref = test_cli.phantom_files.__wrapped__(_Folders(tmp))
    (parametrize,) = [m for m in test_cli.test_bad_input_exits_2_with_one_line.pytestmark if m.name == "parametrize"]
    for make_args, _ in parametrize.args[1]:
        folder = Path(tempfile.mkdtemp(dir=tmp))
        args = make_args(folder, raw, ref) + ["--quiet"]
        yield (f"`{_command(args, tmp)}`", *_run(args, tmp))


def main_table() -> str:
    rows = ["| case | exit | message on stderr |", "|---|---:|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        for case, code, message in cases(tmp):
            # a warning before the error stays visible: one code span per line
            lines = "<br>".join(f"`{line}`" for line in message.replace("|", "\\|").splitlines())
            rows.append(f"| {case} | {code} | {lines} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(main_table())
