"""Outputs built beside their final path and moved into place when complete, or resumed.

An output ``OUT`` is built in the folder ``OUT.partial/`` (the output under
construction, plus a ``run/`` folder for resume state) and renamed to ``OUT``
only when complete, so an interrupted or failed run never leaves a
half-written ``OUT``, and an existing ``OUT`` (replaced only with
``overwrite``) is removed only after the new one is in place. A partial
output carries a *resume key*, a signature of everything its content depends
on; a later run with the same key continues it, any other key discards it.
A running run holds a lock in the folder (its process id and host), so a
second run on the same output is refused with a message naming the first;
the lock of a run that died (even by SIGKILL) is taken over.

Temporaries beside an output carry the host and process id of the run that
made them (:func:`run_tag`): one killed before it removed them leaves them,
and a later run on the same host removes those whose process is gone
(:func:`remove_leftovers`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orgaseg.errors import OrgasegError, arg
from orgaseg.io.provenance import provenance_path, to_jsonable

logger = logging.getLogger(__name__)

_KEY_FILE = "resume-key"
_LOCK_FILE = "lock.json"


def refuse_existing(*paths, overwrite: bool = False) -> None:
    """Refuse to write where a file (or a link) already is, unless ``overwrite``: the first one found is named."""
    if overwrite:
        return
    for path in map(Path, paths):
        if path.exists() or path.is_symlink():
            raise OrgasegError(f"{path} exists; pass {arg('overwrite')} to replace it")


def same_path(first, second) -> bool:
    """Whether two paths name the same file (user folders expanded, links and ``..`` resolved)."""
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


def refuse_replacing_an_input(output, *inputs) -> None:
    """Refuse an ``output`` path that is one of the run's ``inputs``, ``overwrite`` or not.

    Replacing the volume being read is never what the user meant (``segment cell.tif -o cell.tif
    --overwrite`` would put labels where the only copy of the raw data was), nor replacing the
    provenance an input is (``segment other.tif --centers cell.tif.provenance.json -o cell.tif``
    writes ``cell.tif.provenance.json``). ``inputs`` may hold paths,
    :class:`~orgaseg.io.volume.Volume` objects (their ``path``) or anything else (ignored).
    """
    if output is None:
        return
    for item in inputs:
        path = getattr(item, "path", item)
        if not isinstance(path, (str, os.PathLike)):
            continue
        if same_path(path, output):
            raise OrgasegError(f"{output} is also an input of this run; write the output to another path")
        if same_path(path, provenance_path(output)):
            raise OrgasegError(f"{output}: its provenance, {path}, is an input of this run; write the output to "
                               "another path")


class PartialOutput:
    """The folder ``<path>.partial/`` where an output is built, and its life cycle.

    Parameters
    ----------
    path : Path
        Final output path.
    overwrite : bool
        Replace an existing output (at :meth:`move_into_place`). A partial
        output of the same run (the same ``resume_key``) is resumed either way:
        an interrupted ``--overwrite`` run continues when rerun; one of other
        settings is discarded.
    resume_key : str or None
        Signature of the output's content. A partial output left with the same
        key is reused (``resumed`` is true); None never resumes.

    Attributes
    ----------
    folder : Path
        ``<path>.partial``.
    target : Path
        The output under construction, ``<path>.partial/<name>``.
    state : Path
        ``<path>.partial/run``: for the runner's resume state.
    resumed : bool
        Whether an earlier run's partial output is being continued.
    """

    def __init__(self, path: Path, overwrite: bool, resume_key: str | None) -> None:
        self.path = path
        self.overwrite = overwrite
        self.check_target()
        self.folder = path.with_name(path.name + ".partial")
        _refuse_a_live_run(self.folder / _LOCK_FILE, path)
        self.target = self.folder / path.name
        self.state = self.folder / "run"
        self.resume_key = resume_key
        key_file = self.folder / _KEY_FILE
        self.resumed = (
            resume_key is not None
            and key_file.is_file()
            and key_file.read_text(encoding="utf-8") == resume_key
            and self.target.exists()
        )
        if not self.resumed:
            if self.folder.exists() and not overwrite:
                if resume_key is None:  # name, the napari writers and the demo write without resume
                    logger.warning("%s was left by an earlier run, and this command does not resume one: starting "
                                   "afresh", self.folder)
                elif key_file.is_file() and self.target.exists():
                    logger.warning("%s was left by a run with other settings: starting afresh", self.folder)
                else:  # killed before it recorded what it was doing: nothing of it can be trusted
                    logger.warning("%s was left by a run stopped before it had written anything to resume: "
                                   "starting afresh", self.folder)
            remove(self.folder)
            self.state.mkdir(parents=True)
        write_atomic(self.folder / _LOCK_FILE, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        self._placed = False

    def __enter__(self) -> PartialOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        """Leaving the block before :meth:`move_into_place` (an error, Ctrl-C): discard the partial output,
        its lock with it."""
        if not self._placed:
            self.discard()

    def check_target(self) -> None:
        """Refuse an existing output unless ``overwrite``."""
        refuse_existing(self.path, overwrite=self.overwrite)

    def commit_key(self) -> None:
        """Record the key once the output under construction exists (it may then be resumed)."""
        if self.resume_key is not None and not self.resumed:
            write_atomic(self.folder / _KEY_FILE, self.resume_key)

    def move_into_place(self) -> None:
        """Move the finished output to its path and remove the partial folder."""
        self.check_target()  # something may have appeared there meanwhile
        move_into_place(self.target, self.path)
        self._placed = True  # a later run may take the path at once: its partial folder is not this one's
        remove(self.folder)

    def discard(self) -> None:
        """Remove the partial output and its resume state."""
        remove(self.folder)

    def release(self) -> None:
        """Keep the partial output for a later run, and let that run in (remove the lock)."""
        (self.folder / _LOCK_FILE).unlink(missing_ok=True)


def partial_state(path: str | Path) -> Path | None:
    """The resume-state folder of a partial output of ``path`` left by an earlier run, or None.

    What that run stored there can be read before the output is reopened (e.g. the number of
    labels its writer needs); trust it only through a key of its own: the partial output's key
    also covers the writer's layout, unknown at that point.
    """
    path = Path(path).expanduser()
    state = path.with_name(path.name + ".partial") / "run"
    return state if state.is_dir() else None


def _refuse_a_live_run(lock: Path, path: Path) -> None:
    """Raise if another live process holds ``lock``; a lock left by a dead process is ignored (taken over)."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no lock, or half-written by a killed run
    if host == socket.gethostname():
        if pid == os.getpid() or not _alive(pid):
            return
        where = f"process {pid}"
    else:  # another machine of a cluster: its processes cannot be checked from here
        where = f"process {pid} on {host} (if that run is gone, delete {lock})"
    raise OrgasegError(f"another orgaseg run ({where}) is writing {path}: wait for it to finish or stop it; "
                       "two runs on one output would mix or replace each other's work")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def digest(value) -> str:
    """SHA-256 of a JSON-able value (canonical: sorted keys, numpy values made plain)."""
    return hashlib.sha256(json.dumps(to_jsonable(value), sort_keys=True).encode()).hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds.

    Write the new file to the yielded path; on leaving the block it is renamed
    onto ``path`` in one step, so a reader sees the old file or the new one,
    never a part. If the block raises, the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The file to write (its folder must exist).

    Yields
    ------
    Path
        The temporary path, in the same folder (a rename across file systems
        would not be atomic) and ending in ``path``'s name, so writers that
        infer the format from the suffix still work.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "numbers.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("1 2 3")
    >>> target.read_text()
    '1 2 3'
    """
    path = Path(path)
    remove_leftovers(path.parent, once=True)
    # process and thread ids keep concurrent writers of the same file apart
    temporary = path.with_name(f".tmp-{run_tag()}-{threading.get_ident()}.{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # left only when the block failed


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Create the output folder ``path`` (and its parents) for the body; if the body fails, remove again the
    folders this call created that are still empty, so a refused or failed run leaves nothing behind."""
    path = Path(path)
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in created:  # innermost first: a parent is empty once its child is gone
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def write_atomic(path: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> None:
    """Write ``data`` (text or bytes) to ``path`` through :func:`atomic_path`; text in ``encoding``.

    UTF-8 whatever the locale: in a Latin-1 or ASCII locale :meth:`pathlib.Path.write_text`'s default would
    fail on a class name such as ``Zellkern-Hülle``, or write bytes that other tools (and orgaseg's
    readers, which read UTF-8) misread."""
    with atomic_path(path) as temporary:
        if isinstance(data, bytes):
            temporary.write_bytes(data)
        else:
            temporary.write_text(data, encoding=encoding)


def move_into_place(temporary: Path, path: Path) -> None:
    """Rename ``temporary`` to ``path``; an old ``path`` is removed only afterwards."""
    if not (path.exists() or path.is_symlink()):
        os.rename(temporary, path)
    else:
        old = path.with_name(f".{path.name}.old-{run_tag()}")
        remove(old)
        os.rename(path, old)
        try:
            os.rename(temporary, path)
        except BaseException:
            os.rename(old, path)  # put the user's output back
            raise
        remove(old)
    # again, whatever the folder's earlier sweeps kept: an old copy of this output is taken only now it is replaced
    remove_leftovers(path.parent)


def run_tag() -> str:
    """``HOST-PID`` of this process, in the names of its temporaries: :func:`remove_leftovers` tells by it
    which were left by a run that is gone (a folder shared by hosts holds other hosts' live ones)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _leftover_patterns() -> tuple[re.Pattern, ...]:
    """The names of this host's temporaries: :func:`atomic_path`'s, a crop's, the old output
    :func:`move_into_place` moves aside (``output``: the name it had)."""
    host = re.escape(socket.gethostname())
    return (re.compile(rf"\.tmp-{host}-(?P<pid>\d+)-\d+\..+", re.DOTALL),
            re.compile(rf"\.tmp-crop-{host}-(?P<pid>\d+)-.+", re.DOTALL),
            re.compile(rf"\.(?P<output>.+)\.old-{host}-(?P<pid>\d+)", re.DOTALL))


_swept: set[str] = set()  # folders this process has swept already (for once=True)


def remove_leftovers(folder: str | Path, *, once: bool = False) -> list[Path]:
    """Remove the temporaries in ``folder`` that runs on this host left when killed (SIGKILL, power loss).

    Only those of a process that is gone: a live run's temporaries are its work in progress. An old
    output that :func:`move_into_place` moved aside is kept while nothing is at its name (a run killed
    between its two renames: it is the only copy there is). A temporary that cannot be removed is logged,
    never an error: it is not this run's output.

    Parameters
    ----------
    folder : str or Path
        The folder an output is written to.
    once : bool
        Sweep each folder once per process (for writers of many small files, such as block markers,
        which would otherwise list their folder once per file).

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    folder = Path(folder)
    if once:
        if str(folder.absolute()) in _swept:
            return []
        _swept.add(str(folder.absolute()))
    try:
        names = os.listdir(folder)
    except OSError:  # not there (yet): nothing left in it
        return []
    removed = []
    patterns = _leftover_patterns()
    for name in names:
        match = next((m for m in (p.fullmatch(name) for p in patterns) if m), None)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        if "output" in match.re.groupindex and not os.path.lexists(folder / match["output"]):
            continue
        try:
            remove(folder / name)
        except OSError as err:
            logger.warning("%s, left by a stopped run, could not be removed: %s", folder / name, err)
            continue
        logger.info("removed %s, left by a stopped run (process %d)", folder / name, pid)
        removed.append(folder / name)
    return removed


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
