"""Errors and warnings that orgaseg reports to its users.

Every problem with the user's input (a missing path, an unknown format, a
volume of the wrong dimensionality, an empty mask, K larger than the sample)
is raised as :class:`OrgasegError` with a message that names the problem. The
command line turns it into one line on stderr and exit code 2.

A message that tells the user what to pass names the argument with
:func:`arg`: one message, two renderings. From Python it reads
``voxel_size=(z, y, x)``; on the command line, ``--voxel-size Z Y X``.
"""

from __future__ import annotations

import re

#: Each argument a message may name: its Python form and its command-line form.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "axes": ("axes='zyx'", "--axes ORDER"),
    "block_shape": ("block_shape=(z, y, x)", "--block-shape Z Y X"),
    "centers": ("centers=PATH", "--centers PATH"),
    "channel": ("channel=N", "--channel N"),
    "class_map": ("class_map=...", "--class-map MAP"),
    "classes": ("classes=[...]", "--classes NAME ..."),
    "classifier": ("classifier=NAME", "--classifier NAME"),
    "context": ("context=SIZES", "--context SIZES"),
    "data_root": ("data_root=PATH", "--data-root PATH"),
    "device": ("device=NAME", "--device NAME"),
    "executor": ("executor=...", "--executor NAME"),
    "feature_memory": ("feature_memory=BYTES", "--feature-memory SIZE"),
    "features": ("features=NAME", "--features NAME"),
    "invert": ("invert=True", "--invert"),
    "key": ("key=NAME", "--key NAME"),
    "majority_nm": ("majority_nm=R", "--majority R"),
    "mapping": ("mapping=PATH", "--mapping PATH"),
    "mask_key": ("mask_key=NAME", "--mask-key NAME"),
    "method": ("method=NAME", "--method NAME"),
    "min_size_nm2": ("min_size_nm2=A", "--min-size-nm2 A"),
    "min_size_nm3": ("min_size_nm3=V", "--min-size-nm3 V"),
    "model": ("model=CHECKPOINT", "--model CHECKPOINT"),
    "overwrite": ("overwrite=True", "--overwrite"),
    "pixel_size": ("pixel_size=NM", "--pixel-size NM"),
    "prior": ("prior=NAME", "--prior NAME"),
    "raw": ("raw=VOLUME", "--raw VOLUME"),
    "raw_key": ("raw_key=NAME", "--raw-key NAME"),
    "reference_key": ("reference_key=NAME", "--reference-key NAME"),
    "refine": ("refine=True", "--refine"),
    "resume": ("resume=True", "--resume"),
    "sample_size": ("sample_size=N", "--sample-size N"),
    "scheduler": ("scheduler=ADDRESS", "--scheduler ADDRESS"),
    "scribbles": ("scribbles=LABELS", "--scribbles LABELS"),
    "scribbles_key": ("scribbles_key=NAME", "--scribbles-key NAME"),
    "seed": ("seed=N", "--seed N"),
    "steps": ("steps=N", "--steps N"),
    "strict_chunks": ("strict_chunks=True", "--strict-chunks"),
    "threads_per_worker": ("threads_per_worker=N", "--threads-per-worker N"),
    "units": ("units='nm'", "--units nm"),
    "voxel_size": ("voxel_size=(z, y, x)", "--voxel-size Z Y X"),
    "workers": ("workers=N", "--workers N"),
    "z_context": ("z_context=True", "--z-context"),
}

_TOKEN = re.compile("\x02([a-z_]*)(?:\x01([^\x01\x03]*)\x01([^\x03]*))?\x03")


def arg(name: str, value: str | tuple | None = None) -> str:
    """A placeholder for the argument ``name`` in a message (see :data:`ARGUMENTS`).

    With ``value``, the argument with that value: ``method='his4mae'`` or ``voxel_size=(4.6, 4.6)`` from
    Python, ``--method his4mae`` or ``--voxel-size 4.6 4.6`` on the command line.
    """
    if name not in ARGUMENTS:
        raise KeyError(f"no renderings for argument {name!r}")
    if value is None:
        return f"\x02{name}\x03"
    given = " ".join(map(str, value)) if isinstance(value, tuple) else value
    return f"\x02{name}\x01{name}={value!r}\x01{ARGUMENTS[name][1].split()[0]} {given}\x03"


def in_words(python: str, command_line: str) -> str:
    """A placeholder for a phrase said one way to a Python caller, another on the command line.

    ``in_words("call it again with the same arguments", "rerun the same command")``: what a user does next
    where it is no argument of :func:`arg` (it names no option the command may lack).
    """
    return f"\x02\x01{python}\x01{command_line}\x03"


#: Arguments that say how to read a volume: ``orgaseg crop`` has them all, and copies a volume into one that
#: a command without them reads.
VOLUME_ARGUMENTS = ("axes", "channel", "key", "strict_chunks", "voxel_size")


def render(message: str, command_line: bool = False, command: tuple[str, frozenset[str]] | None = None) -> str:
    """``message`` with its argument placeholders in Python form, or in command-line form.

    ``command``, the command's name and option strings: the arguments the
    message names that this command lacks are said to be other commands'
    (with ``orgaseg crop`` as the way round for those that say how to read a
    volume).
    """
    lacking: list[str] = []

    def rendered(match: re.Match) -> str:
        name, *with_value = match.groups()
        text = ARGUMENTS[name][int(command_line)] if with_value[0] is None else with_value[int(command_line)]
        if command is not None and name and text.split()[0] not in command[1] and name not in lacking:
            lacking.append(name)
        return text

    message = _TOKEN.sub(rendered, message)
    if not lacking:
        return message
    flags = [ARGUMENTS[name][1] for name in lacking]
    message += f" ({', '.join(flags)}: not {'an option' if len(flags) == 1 else 'options'} of orgaseg {command[0]}"
    if all(name in VOLUME_ARGUMENTS for name in lacking):
        message += (f"; orgaseg crop PATH --region : : : with {'it' if len(flags) == 1 else 'them'} -o VOLUME.ome.zarr "
                    "makes a copy that it reads")
    return message + ")"


def with_key_option(error: OrgasegError, option: str) -> OrgasegError:
    """``error`` with the key it asks for named ``option`` (e.g. ``raw_key``): the key of one of a command's
    several inputs, each of which has its own."""
    return OrgasegError(str(error.args[0]).replace(arg("key"), arg(option)))


class _Rendered:
    """Messages render their argument placeholders: Python form by ``str()``, CLI form by :meth:`for_command_line`."""

    def __str__(self) -> str:
        return render(super().__str__())

    def for_command_line(self, command: tuple[str, frozenset[str]] | None = None) -> str:
        return render(super().__str__(), command_line=True, command=command)


class Note(str):
    """A note for :meth:`BaseException.add_note` whose text is its Python form (what a traceback shows); the
    command line prints :meth:`for_command_line`."""

    def __new__(cls, message: str) -> Note:  # noqa: PYI034 (typing.Self is 3.11+, orgaseg supports 3.10)
        note = super().__new__(cls, render(message))
        note.message = message
        return note

    def for_command_line(self, command: tuple[str, frozenset[str]] | None = None) -> str:
        return render(self.message, command_line=True, command=command)


class OrgasegError(_Rendered, ValueError):
    """A problem with the user's input, reported without a traceback."""


class OrgasegWarning(_Rendered, UserWarning):
    """Something the user should know about the input or the run; the run goes on."""


def about_volume(error: OrgasegError, path) -> OrgasegError:
    """``error`` with the volume's ``path`` in front of its message, unless it names the volume already.

    A refusal that depends on the volume (its voxel size, its size) reads in a batch log, among the
    messages of other volumes, only when it says which volume it is about. An in-memory volume (no path,
    or a placeholder such as ``"<array>"``) keeps the message as it is.
    """
    message = error.args[0] if error.args else ""
    if not path or str(path).startswith("<") or str(path) in str(error):
        return error
    return OrgasegError(f"{path}: {message}")
