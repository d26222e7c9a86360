"""The clusterer stage: the :class:`~orgaseg.cluster.base.ClustererSpec` protocol and the built-in clusterers.

The built-ins are an explicit table (:data:`CLUSTERERS`); a clusterer defined
outside the package is passed to :func:`orgaseg.segment` as a
:class:`ClustererSpec`, or added to the table with :func:`register_clusterer`
so that a saved state of its kind can be read back by name.
"""

from __future__ import annotations

from orgaseg.cluster.base import Clusterer, ClustererFit, ClustererSpec
from orgaseg.cluster.graph_clusterers import GRAPH_CLUSTERERS
from orgaseg.cluster.kmeans import KMEANS, MINIBATCH_KMEANS, KMeansModel, fit_kmeans
from orgaseg.errors import OrgasegError
from orgaseg.options import lookup

#: The clusterers ``--clusterer`` offers, by name.
CLUSTERERS: dict[str, ClustererSpec] = {spec.name: spec for spec in (KMEANS, MINIBATCH_KMEANS, *GRAPH_CLUSTERERS)}


def get_clusterer(name: str | ClustererSpec) -> ClustererSpec:
    """The clusterer called ``name`` (a spec is returned unchanged); a clear error listing the known ones."""
    return name if isinstance(name, ClustererSpec) else lookup(CLUSTERERS, name, "clusterer")


def register_clusterer(spec: ClustererSpec) -> ClustererSpec:
    """Add a clusterer to the table (for clusterers defined outside the package)."""
    if not isinstance(spec, ClustererSpec):
        raise TypeError("register_clusterer takes a ClustererSpec")
    CLUSTERERS[spec.name] = spec
    return spec


def clusterer_from_dict(state: dict, spec: ClustererSpec | None = None) -> Clusterer:
    """Rebuild a fitted clusterer from its saved state (its ``kind`` names the spec unless ``spec`` is given)."""
    if not isinstance(state, dict):
        raise OrgasegError("a clusterer state must be a JSON object")
    if spec is None:
        spec = get_clusterer(str(state.get("kind", "kmeans")))
    return spec.from_dict(state)


__all__ = ["CLUSTERERS", "Clusterer", "ClustererFit", "ClustererSpec", "KMeansModel", "clusterer_from_dict",
           "fit_kmeans", "get_clusterer", "register_clusterer"]
