"""The evaluation entry point and its report: JSON, Markdown and a confusion PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from orgaseg.errors import OrgasegError, arg, in_words
from orgaseg.evaluation.classmap import DATASET_CLASS_MAP, ClassMap, MappedLabels, parse_class_map
from orgaseg.evaluation.confusion import NothingCounted, confusion_matrix
from orgaseg.evaluation.matching import BY_NAME, EVALUATION_MODES, MODES
from orgaseg.evaluation.metrics import (
    METRICS,
    check_not_a_string,
    resolve_background,
    resolve_classes,
    scores_from_confusion,
)
from orgaseg.io.partial import refuse_existing, write_atomic
from orgaseg.labels import IGNORE_LABEL
from orgaseg.progress import ProgressCallback


#: The files :meth:`EvaluationReport.save` writes.
REPORT_FILES = ("report.json", "report.md", "confusion.png")

#: Reference values listed in the message that refuses them.
_SHOWN_VALUES = 12


def _check_mode(mode: str) -> tuple[str, ...]:
    if mode not in EVALUATION_MODES:
        raise OrgasegError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(EVALUATION_MODES)}")
    return MODES if mode == "both" else (mode,)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def check_report_folder(directory: str | Path, *, overwrite: bool = False) -> None:
    """Refuse a folder that already holds a report, unless ``overwrite`` (checked before the long work too)."""
    refuse_existing(*(Path(directory) / name for name in REPORT_FILES), overwrite=overwrite)


@dataclass
class EvaluationReport:
    """Scores of one segmentation against a reference.

    Attributes
    ----------
    confusion : numpy.ndarray
        ``(K, C)`` int64 voxel counts per (cluster, class).
    classes : list of str
        Names of the C classes.
    background : list of str
        The non-organelle classes.
    results : dict
        Matching mode (``"merge"``, ``"strict"``) to its scores, as returned
        by :func:`~orgaseg.evaluation.scores_from_confusion`.
    label_names : list of str, optional
        The name of each id of a named prediction (mode ``names``): the report speaks of names, not clusters.
    """

    confusion: np.ndarray
    classes: list[str]
    background: list[str]
    results: dict[str, dict]
    label_names: list[str] | None = None

    @classmethod
    def from_confusion(
        cls,
        confusion: np.ndarray,
        *,
        classes: Sequence[str] | None = None,
        background: str | int | Sequence[str | int] | None = None,
        mode: str = "both",
        label_names: Sequence[str] | None = None,
    ) -> EvaluationReport:
        """Score a confusion matrix, e.g. one a block runner accumulated (``label_names``: for mode ``names``)."""
        modes = _check_mode(mode)
        # scores_from_confusion validates the matrix, the names and the background.
        results = {m: scores_from_confusion(confusion, classes, background=background, mode=m, label_names=label_names)
                   for m in modes}
        confusion = np.asarray(confusion).astype(np.int64)
        names = resolve_classes(classes, confusion.shape[1])
        return cls(confusion, names, resolve_background(background, names), results,
                   list(label_names[:confusion.shape[0]]) if label_names is not None else None)

    @property
    def k(self) -> int:
        """Number of clusters K."""
        return int(self.confusion.shape[0])

    @property
    def n_voxels(self) -> int:
        """Number of counted (scored) voxels."""
        return int(self.confusion.sum())

    @property
    def empty_classes(self) -> list[str]:
        """Classes without any counted reference voxel: not scored."""
        return [name for name, total in zip(self.classes, self.confusion.sum(axis=0)) if total == 0]

    @property
    def empty_clusters(self) -> list[int]:
        """Clusters without any counted voxel (only on ignored or masked-out voxels): mapped to no class."""
        return np.flatnonzero(self.confusion.sum(axis=1) == 0).tolist()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: K, classes, counts, empty classes and clusters, the scores per mode, the confusion matrix."""
        out: dict[str, Any] = {
            "k": self.k,
            "classes": list(self.classes),
            "background": list(self.background),
            "n_voxels": self.n_voxels,
            "empty_classes": self.empty_classes,
            "empty_clusters": self.empty_clusters,
        }
        if self.label_names is not None:
            out["label_names"] = self.label_names
        out.update(self.results)
        out["confusion"] = self.confusion.tolist()
        return out

    def to_markdown(self) -> str:
        """Markdown: a table of per-class scores per mode, the means, accuracy and mapping."""
        if self.label_names is None:
            title, empty_ids = f"K = {self.k}", "Empty clusters (no counted voxel, mapped to no class)"
            empty_named = ", ".join(map(str, self.empty_clusters))
        else:  # a named volume: its ids are names, one of them perhaps 'unassigned'
            title = f"{self.k} named ids ({', '.join(self.label_names)})"
            empty_ids = "Names on no counted voxel"
            empty_named = ", ".join(f"{self.label_names[i]} ({i})" for i in self.empty_clusters)
        lines = [
            f"# Evaluation, {title}",
            "",
            f"Counted voxels: {self.n_voxels:,}. Classes: {', '.join(self.classes)} "
            f"(background: {', '.join(self.background)}). "
            f"Empty classes (no reference voxel, not scored): {', '.join(self.empty_classes) or 'none'}. "
            f"{empty_ids}: {empty_named or 'none'}.",
        ]
        empty = {str(k) for k in self.empty_clusters}
        for mode, scores in self.results.items():
            title = "by name (no matching)" if mode == BY_NAME else f"{mode} matching"
            lines += ["", f"## {title}", "", "| class | Dice | IoU | sensitivity | precision |"]
            lines.append("|---|---:|---:|---:|---:|")
            for name, metrics in scores["per_class"].items():
                lines.append(f"| {name} | " + " | ".join(_number(metrics[m]) for m in METRICS) + " |")
            mapping = ", ".join(f"{k} → {'empty' if k in empty else c or '—'}" for k, c in scores["mapping"].items())
            lines += [
                "",
                f"- mean Dice: {_number(scores['mean_dice'])}",
                f"- mean organelle Dice: {_number(scores['mean_dice_organelles'])}",
                f"- pixel accuracy: {_number(scores['accuracy'])}",
                f"- mapping (cluster → class): {mapping}",
            ]
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and ``confusion.png`` into ``directory``.

        The directory is created; each file is written to a temporary name and
        renamed, so an interrupted run leaves no partial report.

        Parameters
        ----------
        directory : str or Path
            Output folder.
        overwrite : bool
            Replace an existing report; otherwise an existing one is an error.

        Returns
        -------
        dict
            ``{"json": path, "markdown": path, "confusion": path}``.
        """
        from orgaseg.viz.confusion_plot import plot_confusion

        directory = Path(directory)
        check_report_folder(directory, overwrite=overwrite)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OrgasegError(f"cannot create the report folder {directory}: {error.strerror}") from error
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        markdown = self.to_markdown()
        mode = "merge" if "merge" in self.results else next(iter(self.results))
        title = f"K = {self.k}, {mode} mapping" if self.label_names is None else "by name"
        paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
        write_atomic(paths["json"], text)
        write_atomic(paths["markdown"], markdown)
        # the figure is written to a temporary name and moved into place as well (viz._figure.save_png)
        paths["confusion"] = plot_confusion(self.confusion, self.classes, mapping=self.results[mode]["mapping"],
                                            path=directory / "confusion.png", title=title)
        return paths


def evaluate(
    pred: Any,
    reference: Any,
    *,
    classes: Sequence[str] | None = None,
    class_map: ClassMap | str | Path | Mapping[str, Any] | None = None,
    background: str | int | Sequence[str | int] | None = None,
    mask: Any | None = None,
    ignore: Iterable[int] | None = None,
    mode: str = "both",
    label_names: Sequence[str] | Mapping[int, str] | None = None,
    n_clusters: int | None = None,
    block_shape: tuple[int, ...] | None = None,
    progress: ProgressCallback | None = None,
) -> EvaluationReport:
    """Score a cluster volume against a reference with the protocol of DESIGN.md.

    Parameters
    ----------
    pred : array-like, 2D or 3D
        Predicted cluster ids ``0 .. K-1`` (numpy array, Volume, zarr array).
    reference : array-like
        Reference class ids ``0 .. C-1``, same shape; or any stored values
        with a ``class_map``. Without ``class_map`` or ``classes`` the counted
        values must be the ids ``0 .. C-1`` without a gap: a label image of
        grey levels would otherwise be scored as one class per grey level.
    classes : sequence of str, optional
        Names of the classes; when given, ``C = len(classes)`` (so a class
        absent from the reference is reported as empty) and a counted
        reference id ``>= C`` is an error that lists the values found (and,
        for ids ``1 .. C``, the class map that names them). Default
        ``class_<id>`` for ids up to the largest counted one.
    class_map : ClassMap, str, Path or mapping, optional
        Which stored reference values are which class (see
        :func:`~orgaseg.evaluation.classmap.parse_class_map`): e.g.
        ``"255=intracellular,0..128=membrane"``, a JSON file, or a dataset's
        map (:data:`orgaseg.datasets.CLASS_MAPS`). It names the classes
        (``classes`` must then be None) and, for a dataset, the background;
        values it does not name are not scored.
    background : str, int or sequence of them, optional
        Non-organelle classes (names or ids), left out of the organelle mean.
        Default: the class map's, else the first class.
    mask : array-like, optional
        Only voxels where ``mask`` is non-zero are scored.
    ignore : int or iterable of int, optional
        Reference values that are not scored. Default ``IGNORE_LABEL``
        without a class map; with one, every value it does not name (and
        ``ignore`` may not name a value the map names).
    mode : {"both", "merge", "strict", "names"}
        Matching modes to report, or ``names``: a named volume (``orgaseg
        name``) scored by its names, each id counting as the class of its
        name and ids whose name is no class (``unassigned``) predicting
        nothing; the score of the naming itself, with no matching.
    label_names : sequence of str or mapping of int to str, optional
        The name of each predicted id, for ``mode="names"``: a list indexed by
        id, or ``{id: name}`` as :func:`orgaseg.organelles.read_label_names`
        reads a named volume's (an id it leaves out is named ``""``, no class).
    n_clusters : int, optional
        K, when the prediction may not use every cluster id.
    block_shape : tuple of int, optional
        Blocks read at a time (see :func:`~orgaseg.evaluation.confusion_matrix`).
    progress : callable, optional
        ``progress(description, done, total)`` per block.

    Returns
    -------
    EvaluationReport
        The scores of each mode asked for (``to_dict()[mode]``: per class Dice, IoU,
        sensitivity, precision, the means, the cluster-to-class mapping), the confusion
        matrix; ``save(directory)`` writes ``report.json``, ``report.md`` and ``confusion.png``.

    Raises
    ------
    OrgasegError
        Besides the errors of :func:`~orgaseg.evaluation.confusion_matrix`:
        reference values that are not class ids ``0 .. C-1`` (without a gap
        when there are no class names), ``classes`` together with a class map, ``ignore``
        values that the class map names.

    Examples
    --------
    >>> import orgaseg
    >>> from orgaseg import synthetic
    >>> cell = synthetic.make_cell((8, 64, 64), voxel_size=(10, 10, 10), seed=0)
    >>> labels = orgaseg.segment(cell.raw, voxel_size=cell.voxel_size, k=4).labels
    >>> report = orgaseg.evaluate(labels, cell.labels, classes=cell.class_names)
    >>> merge = report.to_dict()["merge"]  # each cluster counted as the class it overlaps most
    >>> sorted(merge)
    ['accuracy', 'mapping', 'mean_dice', 'mean_dice_organelles', 'per_class']
    >>> 0 < merge["mean_dice"] <= 1
    True
    """
    _check_mode(mode)
    if (mode == BY_NAME) != (label_names is not None):
        raise OrgasegError("label_names go with mode='names' (a named volume scored by its names), and only with it")
    if isinstance(label_names, Mapping):  # read_label_names's {id: name}, as the command line passes it on
        label_names = [label_names.get(value, "") for value in range(max(label_names, default=-1) + 1)]
    check_not_a_string(classes)  # before a voxel is read
    if isinstance(ignore, (int, np.integer)):  # one value: ignore=255 as ignore=(255,)
        ignore = (ignore,)
    name = getattr(reference, "path", None) or "the reference"
    if class_map is not None:
        class_map = parse_class_map(class_map)
        if classes is not None:
            raise OrgasegError(f"the class map names the classes: pass {arg('classes')} or {arg('class_map')}, not both")
        named = class_map.named(sorted(set(ignore or ())))
        if named:
            raise OrgasegError(f"ignore values {named} are classes of the class map {class_map}")
        reference = MappedLabels(reference, class_map)
        classes, ignore = class_map.classes, (IGNORE_LABEL,)
        background = class_map.background if background is None else background
    elif ignore is None:
        ignore = (IGNORE_LABEL,)
    if classes is not None and len(classes) < 2:  # refused before reading a voxel
        raise _one_class_scored(name, ignore, by_map=class_map is not None)
    try:
        confusion = confusion_matrix(
            pred,
            reference,
            n_clusters=n_clusters,
            # no bound from the class names: a value beyond them is refused below, with every value found
            n_classes=None,
            mask=mask,
            ignore=ignore,
            block_shape=block_shape,
            progress=progress,
        )
    except NothingCounted:
        if class_map is None:
            raise
        # the ignored value is the class map's internal one: say what the user can change
        raise OrgasegError(f"no voxel was counted: the mask is empty or {name} holds no value the class map "
                           f"names ({class_map})") from None
    confusion = _check_class_ids(confusion, name, classes, ignore)
    _check_two_classes(confusion, name, ignore, by_map=class_map is not None, classes=classes,
                       matched=mode != BY_NAME)
    return EvaluationReport.from_confusion(confusion, classes=classes, background=background, mode=mode,
                                           label_names=label_names)


def _check_two_classes(confusion: np.ndarray, name: str, ignore: Iterable[int], *, by_map: bool,
                       classes: Sequence[str] | None, matched: bool) -> None:
    """Refuse fewer than two scored classes, or, where clusters are matched to classes, fewer than two with
    reference voxels: every prediction would score Dice 1 against one (scored by names it would not)."""
    present = np.flatnonzero(confusion.sum(axis=0) > 0)
    if present.size >= 2 or (confusion.shape[1] >= 2 and not matched):
        return
    if confusion.shape[1] >= 2 and present.size:
        names = list(classes) if classes is not None else [str(c) for c in range(confusion.shape[1])]
        empty = ", ".join(n for c, n in enumerate(names) if c not in present)
        dataset = in_words("dataset's map", "--dataset")
        fix = (f"the others ({empty}) have no reference voxel: does the class map name values that {name} holds "
               f"(is it the right {dataset})?" if by_map else f"the others ({empty}) have no reference voxel")
        raise OrgasegError(f"{name}: only one class ({names[present[0]]}) has reference voxels, so any prediction "
                           f"would score Dice 1 against it; {fix}")
    raise _one_class_scored(name, ignore, by_map=by_map)


def _one_class_scored(name: str, ignore: Iterable[int], *, by_map: bool) -> OrgasegError:
    """The error for a reference of which only one class is scored, with what to change."""
    two_classes = arg("class_map", "0=other,255=mitochondria")
    if by_map:
        fix = f"the class map names one class: name the rest too, e.g. {two_classes}"
    else:
        ignored = ", ".join(map(str, sorted(set(ignore))))
        fix = (f"a binary mask stored as 0/255, with 255 among the values not scored ({ignored})? Give a class "
               f"map: {two_classes}")
    return OrgasegError(f"{name}: only one class is scored, so any prediction would score Dice 1 against it; "
                        f"{fix}{in_words('', ' (class_map= in Python)')}")


def _check_class_ids(confusion: np.ndarray, name: str, classes: Sequence[str] | None,
                     ignore: Iterable[int]) -> np.ndarray:
    """The confusion matrix with a column per class, or an error that lists the counted reference values.

    Without ``classes`` the counted values must be the ids ``0 .. C-1`` without a gap; with them, ids
    below ``len(classes)`` (one that does not occur is an empty class).
    """
    found = np.flatnonzero(confusion.sum(axis=0) > 0)
    n_classes = found.size if classes is None else len(classes)
    if confusion.shape[1] <= n_classes:
        return np.pad(confusion, ((0, 0), (0, n_classes - confusion.shape[1])))
    shown = ", ".join(map(str, found[:_SHOWN_VALUES])) + (", ..." if found.size > _SHOWN_VALUES else "")
    if classes is None:
        raise OrgasegError(
            f"{name}: the reference values are not class ids 0..C-1 without gaps: it holds {found.size} values "
            f"({shown}), which would be scored as {confusion.shape[1]} classes; give a class map "
            + in_words("(class_map='255=intracellular,0..128=membrane,...', a mapping or a JSON file)",
                       "(--class-map 255=intracellular,0..128=membrane,... or a JSON file; class_map= in Python)")
            + f", a dataset's ({DATASET_CLASS_MAP}), or class names "
            + in_words("(classes=[...])", "(--classes; classes=)") + " when the missing ids are classes absent here"
        )
    ignored = ", ".join(map(str, sorted(set(ignore))))
    shown += f"; {ignored} not scored" if ignored else ""
    problem = (f"{name} holds {found.size} counted values ({shown}), but "
               f"{n_classes} class names ({arg('classes')}) stand for the class ids 0..{n_classes - 1}")
    if found.size <= n_classes:
        # a 1-based annotation (0 unannotated, 1..C the classes) is the usual case: name its values in order
        pairs = ",".join(f"{value}={cls}" for value, cls in zip(found, classes))
        raise OrgasegError(f"{problem}; if these values are the classes in that order, give the class map "
                           f"{pairs} ({arg('class_map')}) instead of the class names")
    raise OrgasegError(f"{problem}; name a class per value, or give a class map ({arg('class_map')}, e.g. "
                       f"{found[0]}={classes[0]},{found[1]}={classes[1]},...) that says which values are which class")
