"""Validation of user requests (``generate``, ``edit``, ``query``, ``explore``), before any work is done.

Every check raises :class:`SharpgenError` with one line that names the culprit; the CLI turns it into
``sharpgen: error: ...`` and exit code 2 and the explorer into HTTP 400. The checks here need no run: names
against the property table (:mod:`sharpgen.properties`), values, and output paths. What needs the run (a
direction for every name, a reachable target, ``k`` against the index size) is checked by
:func:`sharpgen.latent.generate.steer` and :func:`check_search` before anything is written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SharpgenError
from ..properties import check_names, quantity

MAX_EDIT_STEP = 10.0
"""Largest ``|step|`` of ``edit --step`` (latent units). Latents are ``z ~ N(0, I)`` in 100 dimensions, so
``|z|`` is about 10: a longer step moves a latent farther than its own length, far outside where the generator
was trained (``generate`` itself never steps beyond 8 along a direction)."""

STEERING_METHODS = ("local", "svm")
"""``local``: Gauss-Newton on each latent's own gradients (:func:`sharpgen.latent.steering.solve_local`; a request
naming a property without a soft stand-in falls back to ``svm``); ``svm``: quasi-Newton along the paper's SVM
directions (:func:`sharpgen.latent.steering.solve_targets`), the reference."""

SYSTEM_TREES = ("/proc", "/sys", "/dev")
"""Kernel file systems: never an output directory."""


@dataclass(frozen=True)
class SteerRequest:
    """A checked request: ``targets`` (as named: paper or physical units), ``keep``, ``steps`` (latent units;
    ``edit --step``), the relative ``tolerance`` of a met target and the steering ``method`` (``local``: each
    latent's own gradients; ``svm``: the paper's SVM directions)."""

    targets: dict[str, float] = field(default_factory=dict)
    keep: tuple[str, ...] = ()
    steps: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.05
    method: str = "local"


def parse_assignments(items: Iterable[str], option: str = "--target") -> dict[str, float]:
    """``["tuf=0.03", "psep_mm=40"]`` -> ``{"tuf": 0.03, "psep_mm": 40.0}``; refuses a malformed item, a
    non-finite value and a name given twice (``option`` names the flag in the message)."""
    result: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not sep or not name or not math.isfinite(value):
            raise SharpgenError(f"{option} {item!r}: expected NAME=VALUE with a finite number, e.g. tuf=0.03")
        if name in result:
            raise SharpgenError(f"{option} {name}: given twice; give each property once")
        result[name] = value
    return result


def check_names_and_roles(targets: Iterable[str], keep: Sequence[str], steps: Iterable[str] = ()) -> None:
    """Refuse unknown names, a property kept twice, one quantity targeted in both units (``usflux`` and
    ``tuf``), and a quantity both targeted (or stepped) and kept."""
    targets, steps = list(targets), list(steps)
    check_names(targets, "target")
    check_names(steps, "step")
    check_names(keep, "keep")
    repeated = sorted({name for name in keep if list(keep).count(name) > 1})
    if repeated:
        raise SharpgenError(f"keep {', '.join(repeated)}: given twice; name each kept property once")
    for what, names in (("target", targets), ("step", steps)):
        seen: dict[str, str] = {}
        for name in names:
            if quantity(name) in seen:
                raise SharpgenError(
                    f"{what} {seen[quantity(name)]} and {name} are the same quantity in two units: give one"
                )
            seen[quantity(name)] = name
        kept = {quantity(name): name for name in keep}
        both = [f"{name} (kept as {kept[quantity(name)]})" for name in names if quantity(name) in kept]
        if both:
            raise SharpgenError(f"{what} {', '.join(both)}: a property is either changed or kept, not both")


def check_tolerance(tolerance: float) -> float:
    """A relative tolerance must lie strictly between 0 and 1."""
    if not (math.isfinite(tolerance) and 0.0 < tolerance < 1.0):
        raise SharpgenError(f"--tolerance {tolerance}: expected a relative tolerance between 0 and 1, e.g. 0.05")
    return float(tolerance)


def check_steps(steps: Mapping[str, float]) -> None:
    """Refuse an edit step beyond :data:`MAX_EDIT_STEP` latent units."""
    for name, step in steps.items():
        if abs(step) > MAX_EDIT_STEP:
            raise SharpgenError(
                f"--step {name}={step:g}: at most {MAX_EDIT_STEP:g} latent units either way (|z| is about 10; "
                "farther is outside what the generator learned)"
            )


def steer_request(
    targets: Sequence[str] | None = None,
    keep: Sequence[str] | None = None,
    tolerance: float = 0.05,
    steps: Sequence[str] | None = None,
    method: str = "local",
) -> SteerRequest:
    """Parse and check the ``NAME=VALUE`` ``targets`` (or ``steps``), ``keep`` names and ``tolerance`` of a
    command line (or the explorer) into a :class:`SteerRequest` with steering ``method`` (checked by
    :func:`sharpgen.latent.generate.steer`; the CLI offers only :data:`STEERING_METHODS`)."""
    parsed_targets = parse_assignments(targets or [])
    parsed_steps = parse_assignments(steps or [], option="--step")
    kept = tuple(keep or ())
    check_names_and_roles(parsed_targets, kept, parsed_steps)
    check_steps(parsed_steps)
    return SteerRequest(parsed_targets, kept, parsed_steps, check_tolerance(tolerance), method)


def check_band(option: str, band: Sequence[float] | None, low: float, high: float) -> None:
    """A ``(min, max)`` band in degrees within ``[low, high]`` and with ``min <= max``."""
    if band is None:
        return
    start, end = band
    if not all(math.isfinite(v) and low <= v <= high for v in band):
        raise SharpgenError(f"{option} {start:g} {end:g}: both ends must lie in [{low:g}, {high:g}] degrees")
    if start > end:
        raise SharpgenError(f"{option} {start:g} {end:g}: MIN is above MAX")


def check_search(retriever, k: int, filters) -> None:
    """Refuse ``k`` above the index size and filters that leave no indexed patch (``filters``: a
    :class:`sharpgen.retrieval.index.Filters`), before any query is generated or written."""
    from ..retrieval.index import filter_mask

    size = len(retriever.index)
    if k > size:
        raise SharpgenError(f"--k {k}: the index holds only {size} patches; ask for at most {size}")
    if not filters.is_empty() and not filter_mask(retriever.index, filters).any():
        raise SharpgenError(f"no indexed patch passes the filters ({filters.describe()}); widen them")


def check_out_dir(path: str | os.PathLike) -> Path:
    """An output directory that exists or can be created, and is writable; not a file, not under /proc."""
    path = Path(path)
    resolved = path.expanduser().resolve()
    for tree in SYSTEM_TREES:
        if resolved == Path(tree) or Path(tree) in resolved.parents:
            raise SharpgenError(f"--out-dir {path}: under {tree}, a kernel file system; choose another directory")
    existing = resolved
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == resolved else f"lies under the file {existing}"
        raise SharpgenError(f"--out-dir {path}: {what}; give a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SharpgenError(f"--out-dir {path}: {existing} is not writable")
    return path
