"""The layout of a run's results directory: where every artefact lies and which rule writes it.

:data:`ARTEFACTS` is the one table of artefact paths. :class:`RunLayout` turns it into paths under a
``results_dir``: the Snakemake rules take their inputs and outputs from it (``workflow/rules/common.smk``),
and so do the figures, the CLI and the explorer. :meth:`RunLayout.require` turns a missing artefact into one
line naming the rule that writes it. A stage command given its folder (``--out-dir``, ``--data-dir``) names
the files in it with :func:`stage_file`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SharpgenError


@dataclass(frozen=True)
class Artefact:
    """One artefact: ``folder`` (relative to the results directory; ``{source}`` is the configured source),
    ``name`` inside it, and the Snakemake ``rule`` that writes it."""

    folder: str
    name: str
    rule: str

    @property
    def relative(self) -> str:
        """The path relative to the results directory, e.g. ``gan/generator.pt``."""
        return f"{self.folder}/{self.name}"


ARTEFACTS: dict[str, Artefact] = {
    "raw_manifest": Artefact("raw/{source}", "manifest.parquet", "retrieve"),
    "patches": Artefact("data", "patches.zarr", "normalize"),
    "patch_table": Artefact("data", "patches.parquet", "normalize"),
    "normalization": Artefact("data", "normalization.json", "normalize"),
    "generator": Artefact("gan", "generator.pt", "train_gan"),
    "gan_checkpoint": Artefact("gan", "checkpoints/last.pt", "train_gan"),
    "gan_log": Artefact("gan", "train_log.csv", "train_gan"),
    "gan_grid": Artefact("gan", "samples.png", "train_gan"),
    "gan_previews": Artefact("gan", "previews", "train_gan"),
    "sample_latents": Artefact("samples", "latents.npy", "sample"),
    "sample_patches": Artefact("samples", "patches.zarr", "sample"),
    "sample_table": Artefact("samples", "properties.parquet", "sample"),
    "directions": Artefact("directions", "directions.json", "fit_directions"),
    "traversals": Artefact("directions", "traversals.parquet", "fit_directions"),
    "calibration": Artefact("directions", "calibration.parquet", "fit_directions"),
    "entanglement": Artefact("directions", "entanglement.json", "fit_directions"),
    "label_score": Artefact("directions", "label_score.parquet", "score_directions"),
    "label_score_summary": Artefact("directions", "label_score.json", "score_directions"),
    "encoder": Artefact("retrieval/ssl", "encoder.pt", "train_ssl"),
    "ssl_checkpoint": Artefact("retrieval/ssl", "checkpoints/last.pt", "train_ssl"),
    "ssl_log": Artefact("retrieval/ssl", "train_log.csv", "train_ssl"),
    "embeddings": Artefact("retrieval", "embeddings.npy", "build_index"),
    "index": Artefact("retrieval", "index", "build_index"),
    "index_faiss": Artefact("retrieval/index", "index.faiss", "build_index"),
    "index_rows": Artefact("retrieval/index", "index_rows.parquet", "build_index"),
    "index_info": Artefact("retrieval/index", "index.json", "build_index"),
    "evaluation": Artefact("retrieval", "evaluation.json", "evaluate_retrieval"),
    "evaluation_scatter": Artefact("retrieval", "evaluation_scatter.png", "evaluate_retrieval"),
    "retrieval_examples": Artefact("retrieval", "examples.png", "evaluate_retrieval"),
}
"""Every artefact of a run by key. Figures (``figures/<name>.png`` + ``.json``), ``logs/<rule>.log`` and
``benchmarks/<rule>.tsv`` have one path per name: :meth:`RunLayout.figure`, :meth:`RunLayout.log`,
:meth:`RunLayout.benchmark`."""

UNDECLARED = frozenset({"gan_checkpoint", "gan_previews", "ssl_checkpoint"})
"""Artefacts a rule writes but does not declare as output: Snakemake would delete them before a rerun, and
the checkpoints are what a rerun resumes from."""

STEERING = ("generator", "directions", "sample_table", "sample_latents", "normalization")
"""What :func:`sharpgen.latent.generate.load_steering` reads (generate, edit, query, explorer, figures)."""

RETRIEVER = ("index_info", "index_faiss", "index_rows", "encoder", "patch_table", "patches", "normalization")
"""What :meth:`sharpgen.retrieval.search.Retriever.from_run` reads."""

USER_FOLDERS = {"generate": "generated", "edit": "edited", "query": "query"}
"""Default ``--out-dir`` of the user commands, relative to the results directory."""


def stage_file(stage_dir: str | os.PathLike, key: str) -> Path:
    """Artefact ``key`` inside its stage's folder given on the command line (``gan/`` -> ``gan/generator.pt``)."""
    return Path(stage_dir) / ARTEFACTS[key].name


@dataclass(frozen=True)
class RunLayout:
    """Paths of the artefacts of the run in ``results_dir``; ``source`` (``synthetic``, ``jsoc``, ``fits``)
    places ``raw/<source>/`` and is needed only for it."""

    results_dir: Path
    source: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "results_dir", Path(self.results_dir))

    def folder(self, key: str) -> Path:
        """The stage folder holding artefact ``key`` (what its stage command gets as ``--out-dir``)."""
        folder = ARTEFACTS[key].folder
        if "{source}" in folder and self.source is None:
            raise ValueError(f"artefact {key!r} lies under raw/<source>/: give RunLayout a source")
        return self.results_dir / folder.format(source=self.source)

    def path(self, key: str) -> Path:
        """Where artefact ``key`` of :data:`ARTEFACTS` lies."""
        return self.folder(key) / ARTEFACTS[key].name

    def require(self, key: str) -> Path:
        """:meth:`path` of ``key``, or one :class:`SharpgenError` line naming the rule to run when it is missing."""
        path = self.path(key)
        if not path.exists():
            rule = ARTEFACTS[key].rule
            raise SharpgenError(
                f"{path} is missing: run the {rule} stage (snakemake --cores all --configfile YOUR_CONFIG {path})"
            )
        return path

    def require_all(self, keys: tuple[str, ...]) -> None:
        """:meth:`require` each of ``keys``: the first missing one is the error."""
        for key in keys:
            self.require(key)

    def figure(self, name: str) -> Path:
        """The PNG of figure ``name`` (``figures/<name>.png``); its numbers lie beside it as ``.json``."""
        return self.results_dir / "figures" / f"{name}.png"

    def figure_numbers(self, name: str) -> Path:
        """The key numbers of figure ``name`` (``figures/<name>.json``)."""
        return self.figure(name).with_suffix(".json")

    @property
    def rulegraph(self) -> Path:
        """``snakemake --rulegraph`` of the workflow, the input of the pipeline figure."""
        return self.results_dir / "figures" / "rulegraph.dot"

    def log(self, rule: str) -> Path:
        """The log of ``rule`` (its stdout and stderr, progress bars included)."""
        return self.results_dir / "logs" / f"{rule}.log"

    def benchmark(self, rule: str) -> Path:
        """Snakemake's run time and memory of ``rule``."""
        return self.results_dir / "benchmarks" / f"{rule}.tsv"

    def user_folder(self, command: str) -> Path:
        """Default ``--out-dir`` of the user command ``command`` (``generate``, ``edit``, ``query``)."""
        return self.results_dir / USER_FOLDERS[command]
