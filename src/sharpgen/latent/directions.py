"""Latent directions of physical properties: InterFaceGAN-style linear SVMs and conditional projections.

For a property q measured on generated patches, the latents of the top and bottom ``fraction`` of the samples
(by q) are labelled 1 and 0; a linear SVM separates them on a training part and is scored on a held-out part.
The unit normal of its hyperplane, oriented towards high q, is q's direction ``n_q``: ``z + t n_q`` raises q as
t grows. A *conditional* direction is ``n_q`` with its components along chosen condition directions removed
(the paper's ``project_boundary``, research/paper.md section 5), so stepping along it leaves those conditions'
SVM scores unchanged to first order.

Optionally the latents are first split by a boundary fitted on a signed property (``lead_pol``), and each
side gets its own directions (:class:`DirectionSet` explains why: the latent space is folded by polarity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SharpgenError


@dataclass(frozen=True)
class Direction:
    """A property's latent direction: the unit normal of its SVM hyperplane ``normal . z + offset = 0``.

    ``offset`` is the intercept of the unit-normal hyperplane, so ``normal . z + offset`` is the signed latent
    distance of z to the boundary (positive = high side). ``accuracy`` is measured on the held-out latents.
    """

    name: str
    normal: np.ndarray
    offset: float
    accuracy: float
    n_train: int
    n_heldout: int

    def score(self, latents: np.ndarray) -> np.ndarray:
        """Signed distance of ``(N, 100)`` latents to the hyperplane (latent units; > 0 on the high-q side)."""
        return np.asarray(latents, dtype=np.float64) @ self.normal + self.offset


def extreme_labels(values: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of the bottom and top ``fraction`` of the finite ``values`` (NaN rows are skipped).

    Ties at the cut are broken by position (stable sort), so the two classes never share a sample.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0 < fraction <= 0.5:
        raise SharpgenError(f"label fraction must be in (0, 0.5], got {fraction}")
    finite = np.flatnonzero(np.isfinite(values))
    count = labelled_per_class(values, fraction)
    if count < 2:
        raise SharpgenError(
            f"only {finite.size} samples have a defined value: too few for a top/bottom {fraction:.0%} split"
        )
    order = finite[np.argsort(values[finite], kind="stable")]
    indices = np.concatenate([order[:count], order[-count:]])
    return indices, np.repeat([0, 1], count)


def labelled_per_class(values: np.ndarray, fraction: float) -> int:
    """Samples per class that :func:`extreme_labels` labels: ``fraction`` of the finite ``values``, rounded down."""
    return int(np.floor(fraction * np.isfinite(np.asarray(values, dtype=np.float64)).sum()))


def fit_classifier(
    name: str,
    latents: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    heldout: float = 0.3,
    seed: int = 0,
    regularization: float = 1.0,
) -> Direction:
    """A linear SVM separating ``latents[indices]`` by their 0/1 ``labels``; its unit normal points to label 1.

    A random ``heldout`` part of the labelled latents (stratified) scores the classifier; ``regularization`` is
    the SVM's C.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    latents = np.asarray(latents, dtype=np.float64)
    train, test, y_train, y_test = train_test_split(
        indices, labels, test_size=heldout, random_state=seed, stratify=labels
    )
    classifier = LinearSVC(C=regularization, dual="auto", max_iter=20_000, random_state=seed)
    classifier.fit(latents[train], y_train)
    weights = classifier.coef_[0]
    norm = float(np.linalg.norm(weights))
    if norm == 0.0:
        raise SharpgenError(f"the SVM of {name!r} found no direction (all weights are zero)")
    return Direction(
        name=name,
        normal=weights / norm,
        offset=float(classifier.intercept_[0]) / norm,
        accuracy=float(classifier.score(latents[test], y_test)),
        n_train=int(train.size),
        n_heldout=int(test.size),
    )


def fit_direction(
    name: str,
    latents: np.ndarray,
    values: np.ndarray,
    fraction: float = 0.1,
    heldout: float = 0.3,
    seed: int = 0,
    regularization: float = 1.0,
) -> Direction:
    """Fit the linear SVM of property ``name`` on ``(N, 100)`` latents and their ``(N,)`` property ``values``,
    labelled by the top/bottom ``fraction`` of the finite values (see :func:`fit_classifier`)."""
    try:
        indices, labels = extreme_labels(values, fraction)
    except SharpgenError as exc:
        raise SharpgenError(f"direction {name!r}: {exc} (is the generator trained?)") from None
    return fit_classifier(name, latents, indices, labels, heldout, seed, regularization)


def fit_split(
    name: str, latents: np.ndarray, values: np.ndarray, heldout: float = 0.3, seed: int = 0, regularization: float = 1.0
) -> Direction:
    """The boundary between latents whose signed property ``name`` is positive and negative (zeros and NaN
    are left out), e.g. ``lead_pol``: > 0 when the positive polarity leads (its centroid at a larger column)."""
    values = np.asarray(values, dtype=np.float64)
    indices = np.flatnonzero(np.isfinite(values) & (values != 0))
    labels = (values[indices] > 0).astype(int)
    if min(labels.sum(), labels.size - labels.sum()) < 2:
        raise SharpgenError(f"split {name!r}: fewer than 2 samples on one side (is the generator trained?)")
    return fit_classifier(name, latents, indices, labels, heldout, seed, regularization)


def split_shortfall(name: str, values: np.ndarray, fraction: float) -> str | None:
    """Why the latents cannot be split by the sign of property ``name`` (``(N,)`` ``values``), or None if they can.

    Each side must hold at least ``2 / fraction`` samples, the fewest from which :func:`extreme_labels` takes two
    per class. Samples of a generator that makes (almost) only one leading polarity have no polarity fold to
    undo: their directions are fitted over all latents, as without a split.
    """
    values = np.asarray(values, dtype=np.float64)
    negative, positive = int(np.sum(values < 0)), int(np.sum(values > 0))
    needed = math.ceil(2.0 / fraction)
    if min(negative, positive) >= needed:
        return None
    return (
        f"split by {name} skipped: {negative} samples negative and {positive} positive, fewer than {needed} on "
        "one side; one direction per property over all latents"
    )


def conditional_normal(primal: np.ndarray, conditions: list[np.ndarray]) -> np.ndarray:
    """``primal`` minus its projection onto the span of ``conditions``, renormalized to unit length.

    Stepping along the result changes no condition's SVM score (``n_c . z``). Raises when the primal lies in
    the span of the conditions (nothing is left to move along).
    """
    primal = np.asarray(primal, dtype=np.float64)
    if not conditions:
        return primal / np.linalg.norm(primal)
    basis = np.stack([np.asarray(c, dtype=np.float64) for c in conditions], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, primal, rcond=None)
    residual = primal - basis @ coefficients
    norm = float(np.linalg.norm(residual))
    if norm < 1e-6:
        raise SharpgenError("the direction lies in the span of its conditions: nothing is left to move along")
    return residual / norm


ALL_LATENTS = "all"
SIDES = ("low", "high")
"""Side keys: ``all`` without a split; ``low``/``high`` = negative/positive score of the split boundary."""


def sides_of(split: Direction | None, latents: np.ndarray) -> np.ndarray:
    """``(N,)`` side key of each ``(N, 100)`` latent: ``all`` without a ``split``, else ``low``/``high``."""
    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    if split is None:
        return np.full(len(latents), ALL_LATENTS)
    return np.where(split.score(latents) > 0, SIDES[1], SIDES[0])


@dataclass(frozen=True)
class DirectionSet:
    """Every property's direction, one per side of an optional *split* boundary.

    The latent space of a generator trained on both leading polarities is folded: flipping the sign of
    the latent component that sets the leading polarity mirrors the active region, so a magnitude such as
    the unsigned flux grows towards *both* ends of that component and no single hyperplane separates high
    from low flux. With a ``split`` (a boundary fitted on a signed property such as ``lead_pol``), each side
    gets its own SVM per property and a latent is moved along the direction of the side it lies on.
    """

    split: Direction | None
    plain: dict[str, dict[str, Direction]]  # property -> side -> direction

    def __contains__(self, name: object) -> bool:
        return name in self.plain

    def __iter__(self):
        return iter(self.plain)

    @property
    def sides(self) -> tuple[str, ...]:
        """``("all",)`` without a split, else ``("low", "high")``."""
        return (ALL_LATENTS,) if self.split is None else SIDES

    def side_of(self, latents: np.ndarray) -> np.ndarray:
        """``(N,)`` side key of each ``(N, 100)`` latent."""
        return sides_of(self.split, latents)

    def keep_sides(self, latents: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """``latents``, each moved from its origin (same row of ``origins``), with every move that would cross
        the split boundary cut where it meets the boundary: moving along a direction never flips the side
        (the leading polarity), and past the boundary it goes no further. Identity without a split."""
        latents = np.array(latents, dtype=np.float64)
        if self.split is None:
            return latents
        origins = np.asarray(origins, dtype=np.float64)
        start, end = self.split.score(origins), self.split.score(latents)
        crossed = (end > 0) != (start > 0)
        fraction = start[crossed] / (start[crossed] - end[crossed]) * (1.0 - 1e-6)  # stay on the start's side
        latents[crossed] = origins[crossed] + fraction[:, None] * (latents[crossed] - origins[crossed])
        return latents

    def stepped(self, name: str, latents: np.ndarray, steps, conditions: Sequence[str] = ()) -> np.ndarray:
        """``(N, 100)`` latents each moved by ``steps`` (a number, or one per latent; latent units) along
        ``name``'s direction on its side (with ``conditions``, the conditional one), stopped at the split
        boundary (:meth:`keep_sides`)."""
        latents = np.asarray(latents, dtype=np.float64)
        steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), (len(latents),))
        return self.keep_sides(latents + steps[:, None] * self.normals(name, latents, conditions), latents)

    def accuracy(self, name: str) -> float:
        """Held-out accuracy of ``name``'s SVMs, pooled over the sides (weighted by held-out counts)."""
        fits = self.plain[name].values()
        return sum(d.accuracy * d.n_heldout for d in fits) / sum(d.n_heldout for d in fits)

    def normal(self, name: str, side: str, conditions: Sequence[str] = ()) -> np.ndarray:
        """The unit direction of ``name`` on ``side``; with ``conditions``, orthogonal to their directions on
        that side (:func:`conditional_normal`)."""
        fits = self.plain[name]
        others = [self.plain[c][side].normal for c in conditions if c != name]
        return conditional_normal(fits[side].normal, others)

    def normals(self, name: str, latents: np.ndarray, conditions: Sequence[str] = ()) -> np.ndarray:
        """``(N, 100)``: for each latent, the direction of ``name`` on its side (see :meth:`normal`)."""
        per_side = {side: self.normal(name, side, conditions) for side in self.sides}
        dim = len(next(iter(per_side.values())))
        return np.array([per_side[side] for side in self.side_of(latents)], dtype=np.float64).reshape(-1, dim)


def _direction_entry(d: Direction) -> dict:
    return {
        "normal": [float(x) for x in d.normal],
        "offset": d.offset,
        "heldout_accuracy": d.accuracy,
        "n_train": d.n_train,
        "n_heldout": d.n_heldout,
    }


def _direction_from(name: str, entry: dict) -> Direction:
    return Direction(
        name=name,
        normal=np.asarray(entry["normal"], dtype=np.float64),
        offset=float(entry["offset"]),
        accuracy=float(entry["heldout_accuracy"]),
        n_train=int(entry["n_train"]),
        n_heldout=int(entry["n_heldout"]),
    )


def directions_to_json(directions: DirectionSet, settings: dict) -> dict:
    """The ``directions.json`` document: settings, the split boundary (or null) and, per property, the pooled
    held-out accuracy and per side the normal, offset and held-out accuracy."""
    split = (
        None if directions.split is None else _direction_entry(directions.split) | {"property": directions.split.name}
    )
    return {
        "settings": settings,
        "split": split,
        "directions": {
            name: {
                "heldout_accuracy": directions.accuracy(name),
                "sides": {side: _direction_entry(d) for side, d in fits.items()},
            }
            for name, fits in directions.plain.items()
        },
    }


def directions_from_json(document: dict) -> DirectionSet:
    """Inverse of :func:`directions_to_json`."""
    if any("sides" not in entry for entry in document.get("directions", {}).values()):
        raise SharpgenError(
            "directions.json was written by an older sharpgen (no per-side directions): rerun fit_directions"
        )
    split = document.get("split")
    return DirectionSet(
        split=None if split is None else _direction_from(split["property"], split),
        plain={
            name: {side: _direction_from(name, fit) for side, fit in entry["sides"].items()}
            for name, entry in document["directions"].items()
        },
    )
