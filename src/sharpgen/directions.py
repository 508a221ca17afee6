"""Latent directions of physical properties: InterFaceGAN-style linear SVMs and conditional projections.

For a property q measured on generated patches, the latents of the top and bottom ``fraction`` of the samples
(by q) are labelled 1 and 0; a linear SVM separates them on a training part and is scored on a held-out part.
The unit normal of its hyperplane, oriented towards high q, is q's direction ``n_q``: ``z + t n_q`` raises q as
t grows. A *conditional* direction is ``n_q`` with its components along chosen condition directions removed
(the paper's ``project_boundary``, research/paper.md section 5), so stepping along it leaves those conditions'
SVM scores unchanged to first order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SharpgenError


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
    count = int(np.floor(fraction * finite.size))
    if count < 2:
        raise SharpgenError(
            f"only {finite.size} samples have a defined value: too few for a top/bottom {fraction:.0%} split"
        )
    order = finite[np.argsort(values[finite], kind="stable")]
    indices = np.concatenate([order[:count], order[-count:]])
    return indices, np.repeat([0, 1], count)


def fit_direction(
    name: str,
    latents: np.ndarray,
    values: np.ndarray,
    fraction: float = 0.1,
    heldout: float = 0.3,
    seed: int = 0,
    regularization: float = 1.0,
) -> Direction:
    """Fit the linear SVM of property ``name`` on ``(N, 100)`` latents and their ``(N,)`` property ``values``.

    Labels: top/bottom ``fraction`` of the finite values. A random ``heldout`` part of the labelled latents
    (stratified) scores the classifier; ``regularization`` is the SVM's C.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    latents = np.asarray(latents, dtype=np.float64)
    try:
        indices, labels = extreme_labels(values, fraction)
    except SharpgenError as exc:
        raise SharpgenError(f"direction {name!r}: {exc} (is the generator trained?)") from None
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


def directions_to_json(directions: list[Direction], settings: dict) -> dict:
    """The ``directions.json`` document: settings and, per property, normal, offset and held-out accuracy."""
    return {
        "settings": settings,
        "directions": {
            d.name: {
                "normal": [float(x) for x in d.normal],
                "offset": d.offset,
                "heldout_accuracy": d.accuracy,
                "n_train": d.n_train,
                "n_heldout": d.n_heldout,
            }
            for d in directions
        },
    }


def directions_from_json(document: dict) -> dict[str, Direction]:
    """Inverse of :func:`directions_to_json`: property name -> :class:`Direction`."""
    return {
        name: Direction(
            name=name,
            normal=np.asarray(entry["normal"], dtype=np.float64),
            offset=float(entry["offset"]),
            accuracy=float(entry["heldout_accuracy"]),
            n_train=int(entry["n_train"]),
            n_heldout=int(entry["n_heldout"]),
        )
        for name, entry in document["directions"].items()
    }
