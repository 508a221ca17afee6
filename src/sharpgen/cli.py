"""The ``sharpgen`` command line: user-facing actions and one subcommand per pipeline stage.

A user mistake (bad file, bad config, bad option) prints one line ``sharpgen: error: ...`` and exits with
code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

from . import __version__
from .config import build_settings, load_config, settings_from_config, validate_config
from .errors import SharpgenError
from .latent.requests import MAX_EDIT_STEP, STEERING_METHODS
from .retrieval.search import PANEL_MATCHES
from .run import RunLayout, stage_file

EPILOG = (
    "Units: field in G, lengths in Mm, flux in Mx; 'paper' properties are in the paper's normalized units "
    "(128x128 patch, 1 unit = 1 kG). The pipeline itself runs with `snakemake` (see the README)."
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _json_mapping(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"n_patches\": 100}'")
    return value


def _cmd_properties(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data.measure import check_measurement, fits_properties

    check_measurement(args.size, args.threshold_gauss)
    rows, failures = [], []
    for path in args.files:
        try:
            rows.append(fits_properties(path, size=args.size, threshold_gauss=args.threshold_gauss))
        except SharpgenError as exc:
            failures.append(str(exc))
    if rows:
        table = pd.DataFrame(rows)
        if args.format == "csv":
            table.to_csv(sys.stdout, index=False)
        else:
            records = [
                {key: (None if isinstance(val, float) and math.isnan(val) else val) for key, val in row.items()}
                for row in rows
            ]
            json.dump(records, sys.stdout, indent=2)
            sys.stdout.write("\n")
    for message in failures:
        print(f"sharpgen: error: {message}", file=sys.stderr)
    return 2 if failures else 0


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from .data.retrieve import retrieve

    settings = load_config(args.configfile).get(args.source, {}) if args.configfile else {}
    settings.update(args.settings or {})
    manifest = retrieve(
        args.source,
        args.out_dir,
        settings=settings,
        seed=args.seed,
        workers=args.threads,
        progress=not args.no_progress,
    )
    print(f"{len(manifest)} records -> {stage_file(args.out_dir, 'raw_manifest')}", file=sys.stderr)
    return 0


def _stage_config(args: argparse.Namespace, section: str) -> dict:
    """Validated config of a stage command: --configfile (or defaults), --settings into ``section``,
    --normalize-settings into ``normalize`` (commands that measure patches), --image-size. Without a
    --configfile the other sections are defaults, so only this stage's rules apply, not those between stages."""
    whole = bool(args.configfile)
    config = load_config(args.configfile) if whole else validate_config({}, whole_pipeline=False)
    config[section].update(args.settings or {})
    config["normalize"].update(getattr(args, "normalize_settings", None) or {})
    if args.image_size is not None:
        config["image_size"] = args.image_size
    return validate_config(config, whole_pipeline=whole)


def _cmd_normalize(args: argparse.Namespace) -> int:
    from .data.normalize import NormalizeSettings, build_dataset

    config = _stage_config(args, "normalize")
    table = build_dataset(
        args.raw_dir,
        args.out_dir,
        settings_from_config(NormalizeSettings, config),
        seed=args.seed,
        workers=args.threads,
        scheduler_address=args.scheduler_address,
        progress=not args.no_progress,
    )
    counts = table["split"].value_counts().to_dict()
    print(
        f"{len(table)} patches -> {stage_file(args.out_dir, 'patches')} (splits: {counts})",
        file=sys.stderr,
    )
    return 0


def _cmd_train_gan(args: argparse.Namespace) -> int:
    from .gan.train import GanSettings, train_gan

    config = _stage_config(args, "gan")
    log = train_gan(
        args.data_dir,
        args.out_dir,
        settings_from_config(GanSettings, config),
        seed=args.seed,
        device=config["gan"]["device"],
        threads=args.threads,
        progress=not args.no_progress,
        preview_every=config["gan"]["preview_every"],
    )
    print(f"{len(log)} steps -> {stage_file(args.out_dir, 'generator')}", file=sys.stderr)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .gan.sample import SampleSettings, sample_generator

    config = _stage_config(args, "sample")
    count = sample_generator(
        args.generator,
        args.out_dir,
        settings_from_config(SampleSettings, config),
        seed=args.seed,
        device=config["sample"]["device"],
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(f"{count} samples -> {args.out_dir}/(latents.npy, patches.zarr, properties.parquet)", file=sys.stderr)
    return 0


def _cmd_train_ssl(args: argparse.Namespace) -> int:
    from .retrieval.train import SslSettings, train_ssl

    config = _stage_config(args, "ssl")
    log = train_ssl(
        args.data_dir,
        args.out_dir,
        settings_from_config(SslSettings, config),
        seed=args.seed,
        device=config["ssl"]["device"],
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(f"{len(log)} steps -> {stage_file(args.out_dir, 'encoder')}", file=sys.stderr)
    return 0


def _cmd_build_index(args: argparse.Namespace) -> int:
    from .retrieval.embed import embed_dataset
    from .retrieval.index import IndexSettings, build_index_from_files

    config = _stage_config(args, "index")
    embeddings = stage_file(args.out_dir, "embeddings")
    embed_dataset(
        args.data_dir,
        args.encoder,
        embeddings,
        device=config["ssl"]["device"],
        threads=args.threads,
        progress=not args.no_progress,
    )
    index = build_index_from_files(
        embeddings,
        stage_file(args.data_dir, "patch_table"),
        stage_file(args.out_dir, "index"),
        settings_from_config(IndexSettings, config),
        threads=args.threads,
        image_size=config["image_size"],
    )
    print(f"{len(index)} patches indexed -> {stage_file(args.out_dir, 'index')}", file=sys.stderr)
    return 0


def _cmd_evaluate_retrieval(args: argparse.Namespace) -> int:
    from .retrieval.evaluate import RetrievalEvalSettings, evaluate_retrieval

    config = _stage_config(args, "retrieval_eval")
    document = evaluate_retrieval(
        args.run_dir,
        args.out_dir or RunLayout(args.run_dir).folder("evaluation"),
        settings_from_config(RetrievalEvalSettings, config),
        seed=args.seed,
        device=config["ssl"]["device"],
        threads=args.threads,
    )
    for method, scores in document["methods"].items():
        tuf = scores["top1"]["tuf"]
        print(f"{method}: tuf top-1 Pearson {tuf['pearson']:.3f}, Spearman {tuf['spearman']:.3f}", file=sys.stderr)
    return 0


def _cmd_fit_directions(args: argparse.Namespace) -> int:
    from .gan.sample import SampleSettings
    from .latent.fit import DirectionSettings, fit_directions

    config = _stage_config(args, "directions")
    document = fit_directions(
        args.samples_dir,
        args.generator,
        args.out_dir,
        settings_from_config(DirectionSettings, config),
        settings_from_config(SampleSettings, config),
        seed=args.seed,
        device=config["sample"]["device"],
        threads=args.threads,
        progress=not args.no_progress,
    )
    for name, entry in document["directions"].items():
        print(
            f"{name}: held-out accuracy {entry['heldout_accuracy']:.3f}, traversal Spearman "
            f"{entry['traversal']['plain']['median_spearman']:.3f}",
            file=sys.stderr,
        )
    if document["split"] is not None:
        split = document["split"]
        print(f"split by {split['property']}: held-out accuracy {split['heldout_accuracy']:.3f}", file=sys.stderr)
    for reason in document["skipped"].values():
        print(f"sharpgen: warning: {reason}", file=sys.stderr)
    return 0


def _cmd_score_directions(args: argparse.Namespace) -> int:
    from .latent.score import LabelScoreSettings, write_label_score

    config = _stage_config(args, "label_score")
    _torch_threads(args.threads)
    document = write_label_score(
        args.run_dir,
        settings_from_config(LabelScoreSettings, config),
        seed=args.seed,
        device=config["sample"]["device"],
        progress=not args.no_progress,
    )

    def mean(entries: dict, key: str) -> float:
        values = [entry[key] for entry in entries.values()]
        return sum(values) / len(values) if values else math.nan

    for name in document["skipped"]:
        print(f"sharpgen: warning: {name} not scored: fit_directions gave it no direction", file=sys.stderr)
    for method, kinds in document["methods"].items():
        single, joint, keep = (kinds.get(kind, {}) for kind in ("single", "joint", "keep"))
        print(
            f"{method}: single targets met {mean(single, 'met'):.2f}, joint {mean(joint, 'met'):.2f}, "
            f"kept property held {mean(keep, 'held'):.2f} (random starts)",
            file=sys.stderr,
        )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .latent.generate import load_steering, starting_latents, steer_and_write
    from .latent.requests import check_out_dir, steer_request

    request = steer_request(args.target, args.keep, args.tolerance, method=args.method)
    out_dir = check_out_dir(args.out_dir or RunLayout(args.run_dir).user_folder("generate"))
    _torch_threads(args.threads)
    steering = load_steering(args.run_dir, device=args.device)
    starts = starting_latents(steering, request.targets, args.n, args.seed, request.keep)
    result = steer_and_write(steering, starts, request, out_dir, "generated")
    _report_steering(out_dir, "generated", result, request, steering)
    return 0


def _torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _report_steering(out_dir, prefix, result, request, steering) -> None:
    hits, count = int(result.converged.sum()), len(result.converged)
    print(f"{count} patches -> {out_dir}/{prefix}_*.fits, {prefix}.png, {prefix}.csv", file=sys.stderr)
    aimed = "every stepped value" if request.steps else "every target"
    goals = [text for text, given in ((aimed, result.targets), ("the kept values", request.keep)) if given]
    if goals:
        print(f"{hits} of {count} within {request.tolerance:.0%} of {' and '.join(goals)}", file=sys.stderr)
        if hits < count:
            print(f"sharpgen: warning: {count - hits} request(s) missed; see {prefix}.csv", file=sys.stderr)
    if hits < count and not request.steps:
        _explain_rare_requests(result, request, steering)


def _explain_rare_requests(result, request, steering) -> None:
    """Warn when missed requests ask for what the model's samples (almost) never have: several targets together,
    or a target beside a kept property's start value (no steering can meet those)."""
    import numpy as np

    from .latent.score import SUPPORTED, request_support, support

    samples = len(steering.samples)
    if len(request.targets) > 1:
        share = support(steering, request.targets, request.tolerance)
        if share < SUPPORTED:
            print(
                f"sharpgen: warning: the model rarely makes such a region: {share:.3%} of its {samples} "
                "samples meet these targets together (each alone is within its range)",
                file=sys.stderr,
            )
            return
    if not request.keep:
        return
    missed = np.flatnonzero(~result.converged)
    shares = request_support(steering, request.targets, request.keep, result.summary.iloc[missed], request.tolerance)
    rare = shares < SUPPORTED
    if rare.any():
        print(
            f"sharpgen: warning: the model rarely makes such a region: {rare.sum()} of the {missed.size} missed "
            f"request(s) ask for what at most {shares[rare].max():.3%} of its {samples} samples have (the targets "
            f"with {', '.join(request.keep)} at the start's value)",
            file=sys.stderr,
        )


def _cmd_edit(args: argparse.Namespace) -> int:
    from .latent.generate import load_latents, load_steering, steer_and_write, weak_directions
    from .latent.requests import check_out_dir, steer_request

    if bool(args.step) == bool(args.target):
        raise SharpgenError("give either --step NAME=STEPS or --target NAME=VALUE (not both)")
    request = steer_request(args.target, args.keep, args.tolerance, steps=args.step, method=args.method)
    out_dir = check_out_dir(args.out_dir or RunLayout(args.run_dir).user_folder("edit"))
    starts = load_latents(args.latents, args.rows)
    _torch_threads(args.threads)
    steering = load_steering(args.run_dir, device=args.device)
    for name, correlation in weak_directions(steering, list(request.steps or {})).items():
        print(
            f"sharpgen: warning: {name}'s direction barely moves {name} on this run (median Spearman "
            f"{correlation:.2f} along its traversals; 1 = always up), so a step along it may not raise it; "
            f"--target {name}=VALUE aims at a value along each latent's own gradients",
            file=sys.stderr,
        )
    result = steer_and_write(steering, starts, request, out_dir, "edited")
    _report_steering(out_dir, "edited", result, request, steering)
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from .data.fitsio import check_field_file
    from .data.normalize import Normalization
    from .latent.requests import check_out_dir, check_search, steer_request
    from .retrieval.index import Filters
    from .retrieval.search import Retriever, fits_queries, write_query_results

    request = steer_request(args.target, args.keep, args.tolerance, method=args.method)
    filters = Filters(
        time_range=args.time_range,
        harpnums=args.harp,
        latitude=args.latitude,
        abs_latitude=args.abs_latitude,
        splits=args.split,
    )
    out_dir = check_out_dir(args.out_dir or RunLayout(args.run_dir).user_folder("query"))
    if args.latents:
        from .latent.generate import load_latents

        latents = load_latents(args.latents, args.rows)
    if args.fits:
        for path in args.fits:
            check_field_file(path)
        normalization = Normalization.of_run(RunLayout(args.run_dir), args.configfile)
    _torch_threads(args.threads)
    retriever = Retriever.from_run(args.run_dir, device=args.device)
    check_search(retriever, args.k, filters)
    if args.fits:
        patches, queries = fits_queries(args.fits, normalization)
    else:
        from .gan.sample import generate
        from .latent.generate import load_steering, starting_latents, steer_and_write

        steering = load_steering(args.run_dir, device=args.device)
        if args.latents:
            queries = steering.measure(latents)
            labels = [f"{args.latents}[{row}]" for row in (args.rows or range(len(latents)))]
        else:
            starts = starting_latents(steering, request.targets, args.n, args.seed, request.keep)
            result = steer_and_write(steering, starts, request, out_dir, "generated")
            _report_steering(out_dir, "generated", result, request, steering)
            latents, queries = result.latents, result.table
            labels = [f"generated_{i:03d}" for i in range(len(latents))]
        patches = generate(steering.generator, latents, steering.device)
        queries = queries.reset_index(drop=True)
        queries.insert(0, "label", labels)
    table = write_query_results(out_dir, retriever, patches, queries, args.k, filters, args.one_per_harp)
    best = table[table["rank"] == 1]
    print(f"{len(queries)} queries, {len(table)} matches -> {out_dir}/matches.csv, query.png", file=sys.stderr)
    for _, row in best.iterrows():
        print(
            f"{row['query_label']}: best match HARP {row.get('harpnum', '?')} at {row.get('t_rec', '?')} "
            f"(cosine {row['similarity']:.3f})",
            file=sys.stderr,
        )
    return 0


def _cmd_invert(args: argparse.Namespace) -> int:
    from .data.fitsio import check_field_file
    from .gan.invert import InversionSettings, run_invert
    from .gan.models import load_generator
    from .latent.requests import check_out_dir

    check_out_dir(args.out_dir)
    for path in args.fits or ():
        check_field_file(path)
    load_generator(args.generator)  # a file that is no generator is refused before anything else is read

    normalization = None
    if args.fits:
        from pathlib import Path

        from .data.normalize import Normalization

        run_dir = args.run_dir or Path(args.generator).resolve().parent.parent  # RUN_DIR/gan/generator.pt
        normalization = Normalization.of_run(RunLayout(run_dir), args.configfile)
    table = run_invert(
        args.generator,
        args.out_dir,
        fits_files=args.fits,
        data_dir=args.data_dir,
        rows=args.rows,
        normalization=normalization,
        settings=build_settings(InversionSettings, args.settings),
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(
        f"{len(table)} latents -> {os.path.join(args.out_dir, 'latents.npy')} "
        f"(median reconstruction error {table['rmse_gauss'].median():.0f} G rms)",
        file=sys.stderr,
    )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config = load_config(args.configfile)
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from .explore.server import command

    return command(args)


def _add_stage_options(parser: argparse.ArgumentParser, section: str, seed_help: str | None, threads_help: str) -> None:
    """Options shared by stage commands whose config is a ``section`` plus the top-level ``image_size``."""
    parser.add_argument("--configfile", help=f"pipeline config YAML whose {section} section and image_size are used")
    parser.add_argument("--settings", type=_json_mapping, help=f"JSON object overriding keys of the {section} section")
    parser.add_argument("--image-size", type=_positive_int, help="patch side S in px (default: the config's)")
    if seed_help is not None:
        parser.add_argument("--seed", type=int, default=23, help=f"{seed_help} (default: 23)")
    parser.add_argument("--threads", type=_positive_int, default=1, help=f"{threads_help} (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_normalize_option(parser: argparse.ArgumentParser) -> None:
    """``--normalize-settings``: commands that measure generated patches need the run's normalization."""
    parser.add_argument(
        "--normalize-settings",
        type=_json_mapping,
        help="JSON object overriding keys of the normalize section (mode, scale_mm, threshold_gauss)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``sharpgen`` command."""
    parser = argparse.ArgumentParser(
        prog="sharpgen",
        description="Generate solar active regions by physical properties and retrieve real SDO/HMI SHARP "
        "patches that look like them.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"sharpgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    props = commands.add_parser(
        "properties",
        help="print the physical properties of SHARP FITS files",
        description="Print every physical property of SHARP CEA FITS files: physical ones (Mx, Mm, deg, "
        "JSOC R_VALUE) at native resolution, paper ones after the paper's normalization (clip +-1000 G, "
        "/1000, resize to SIZE x SIZE). Header USFLUX/R_VALUE are echoed as header_usflux/header_r_value "
        "when present.",
        epilog=EPILOG,
    )
    props.add_argument("files", nargs="+", metavar="FILE.fits", help="SHARP CEA FITS files (compressed or not)")
    props.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    props.add_argument("--size", type=_positive_int, default=128, help="normalized patch side in px (default: 128)")
    props.add_argument(
        "--threshold-gauss",
        type=float,
        default=150.0,
        help="strong-field threshold for polarity masks, in G (default: 150, the paper's 0.15 kG)",
    )
    props.set_defaults(func=_cmd_properties)

    retr = commands.add_parser(
        "retrieve",
        help="pipeline stage: produce raw SHARP-like FITS files and their manifest",
        description="Write one SHARP-like CEA FITS file per record into OUT_DIR, then OUT_DIR/manifest.parquet "
        "(written last: its presence means the set is complete).",
        epilog=EPILOG,
    )
    retr.add_argument(
        "--source", choices=("synthetic", "jsoc", "fits"), default="synthetic", help="data source (default: synthetic)"
    )
    retr.add_argument("--out-dir", required=True, help="directory that receives the FITS files and manifest")
    retr.add_argument("--configfile", help="pipeline config YAML whose section named like the source is used")
    retr.add_argument(
        "--settings",
        type=_json_mapping,
        help="JSON object overriding keys of the source's config section, e.g. '{\"n_patches\": 100}'",
    )
    retr.add_argument("--seed", type=int, default=23, help="random seed (default: 23)")
    retr.add_argument("--threads", type=_positive_int, default=1, help="worker processes (default: 1)")
    retr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    retr.set_defaults(func=_cmd_retrieve)

    norm = commands.add_parser(
        "normalize",
        help="pipeline stage: normalize raw records into patches.zarr + patches.parquet (Dask)",
        description="Normalize every usable record of RAW_DIR (see its manifest.parquet) into OUT_DIR/patches.zarr "
        "(float32 (N, S, S) in [-1, 1]) and OUT_DIR/patches.parquet (row i describes patch i: ids, keywords, "
        "native and normalized pixel sizes in Mm, physical and paper properties, train/val/test split by HARP).",
        epilog=EPILOG,
    )
    norm.add_argument("--raw-dir", required=True, help="directory holding the FITS files and manifest.parquet")
    norm.add_argument("--out-dir", required=True, help="directory that receives patches.zarr and patches.parquet")
    _add_stage_options(
        norm, "normalize", seed_help="random seed of the HARP split", threads_help="Dask worker processes"
    )
    norm.add_argument("--scheduler-address", help="use this Dask scheduler instead of a local cluster")
    norm.set_defaults(func=_cmd_normalize)

    gan = commands.add_parser(
        "train-gan",
        help="pipeline stage: train the GAN on the train split (resumes from its last checkpoint)",
        description="Train the GAN on the train split of DATA_DIR/patches.zarr. Writes OUT_DIR/generator.pt (EMA "
        "weights + settings), OUT_DIR/checkpoints/last.pt (every gan.checkpoint_every steps, atomically) and "
        "OUT_DIR/train_log.csv. Rerunning after an interruption resumes from the last checkpoint.",
        epilog=EPILOG,
    )
    gan.add_argument("--data-dir", required=True, help="directory holding patches.zarr and patches.parquet")
    gan.add_argument("--out-dir", required=True, help="directory that receives generator.pt, checkpoints/, the log")
    _add_stage_options(gan, "gan", seed_help="random seed", threads_help="CPU threads for PyTorch")
    gan.set_defaults(func=_cmd_train_gan)

    sample = commands.add_parser(
        "sample",
        help="pipeline stage: sample the generator in bulk and measure every generated patch",
        description="Draw sample.n_samples latents z ~ N(0, I) from a seeded stream and write OUT_DIR/latents.npy "
        "((M, 100) float32), OUT_DIR/properties.parquet (row i: the paper-unit properties of the patch of latent "
        "i, plus physical ones in Mx/Mm when normalize.mode is fixed_scale) and OUT_DIR/patches.zarr ((K, S, S) "
        "float32, 1 unit = 1 kG: the first K = sample.stored_patches patches). Batched: memory does not grow "
        "with M.",
        epilog=EPILOG,
    )
    sample.add_argument("--generator", required=True, help="generator.pt written by train-gan")
    sample.add_argument("--out-dir", required=True, help="directory that receives the samples")
    _add_stage_options(sample, "sample", seed_help="seed of the latent stream", threads_help="CPU threads")
    _add_normalize_option(sample)
    sample.set_defaults(func=_cmd_sample)

    ssl = commands.add_parser(
        "train-ssl",
        help="pipeline stage: train the SSL encoder of real patches (resumes from its last checkpoint)",
        description="Train the SSL encoder on the train split of DATA_DIR/patches.zarr (two augmented views per "
        "patch; ssl.objective: vicreg, the default, or the paper's simsiam). Writes OUT_DIR/encoder.pt, "
        "OUT_DIR/checkpoints/last.pt and OUT_DIR/train_log.csv (loss, output_std and effective_rank (RankMe): "
        "collapse shows as output_std or effective_rank near 0 or 1). Rerunning after an interruption resumes.",
        epilog=EPILOG,
    )
    ssl.add_argument("--data-dir", required=True, help="directory holding patches.zarr and patches.parquet")
    ssl.add_argument("--out-dir", required=True, help="directory that receives encoder.pt, checkpoints/, the log")
    _add_stage_options(ssl, "ssl", seed_help="random seed", threads_help="CPU threads for PyTorch")
    ssl.set_defaults(func=_cmd_train_ssl)

    idx = commands.add_parser(
        "build-index",
        help="pipeline stage: embed every real patch and build the nearest-neighbour index",
        description="Embed every patch of DATA_DIR/patches.zarr (all splits) with ENCODER into "
        "OUT_DIR/embeddings.npy (row i = patch i), then build a FAISS index (cosine similarity; exact or "
        "approximate, see the index section of the config) in OUT_DIR/index/ (index.faiss, index_rows.parquet "
        "with the id and metadata of each row, index.json written last).",
        epilog=EPILOG,
    )
    idx.add_argument("--data-dir", required=True, help="directory holding patches.zarr and patches.parquet")
    idx.add_argument("--encoder", required=True, help="encoder.pt written by train-ssl")
    idx.add_argument("--out-dir", required=True, help="directory that receives embeddings.npy and index/")
    _add_stage_options(idx, "index", seed_help=None, threads_help="CPU threads")
    idx.set_defaults(func=_cmd_build_index)

    ev = commands.add_parser(
        "evaluate-retrieval",
        help="pipeline stage: correlate generated queries' properties with their real matches' (+ baselines)",
        description="Use the first n_queries generated samples of RUN_DIR/samples as queries, match them to the "
        "real patches with the run's SSL index and with pixel-space, PCA-space and random baselines, and "
        "write the Pearson and Spearman correlations of tuf, psep, r_paper, tpf and tnf between query and top-1 "
        "match (and top-k mean), the leading-polarity and tilt-sign agreement, the index's effective rank and "
        "top-1 cosine spread, and same-region recall@1/@5 (held-out patches whose HARP has other observations "
        "query the index) to OUT_DIR/evaluation.json, with evaluation_scatter.png and examples.png.",
        epilog=EPILOG,
    )
    ev.add_argument("--run-dir", required=True, help="a pipeline run's results_dir (samples, data, retrieval)")
    ev.add_argument("--out-dir", help="output directory (default: RUN_DIR/retrieval)")
    _add_stage_options(
        ev, "retrieval_eval", seed_help="seed of the random baseline and the PCA", threads_help="CPU threads"
    )
    ev.set_defaults(func=_cmd_evaluate_retrieval)

    fit = commands.add_parser(
        "fit-directions",
        help="pipeline stage: one latent direction per physical property (linear SVMs), calibrated",
        description="Fit a linear SVM per property on the sampled latents (top vs. bottom label_fraction), take "
        "its unit normal as the property's direction and its conditional version (orthogonal to the other "
        "properties' normals), then traverse both from random latents to calibrate property change vs. step and "
        "measure entanglement. Writes OUT_DIR/directions.json, traversals.parquet, calibration.parquet and "
        "entanglement.json.",
        epilog=EPILOG,
    )
    fit.add_argument("--samples-dir", required=True, help="directory holding latents.npy and properties.parquet")
    fit.add_argument("--generator", required=True, help="generator.pt written by train-gan")
    fit.add_argument("--out-dir", required=True, help="directory that receives directions.json and the tables")
    _add_stage_options(
        fit, "directions", seed_help="seed of the SVM split and traversal starts", threads_help="CPU threads"
    )
    _add_normalize_option(fit)
    fit.set_defaults(func=_cmd_fit_directions)

    score = commands.add_parser(
        "score-directions",
        help="pipeline stage: the label score of generate/edit (targets met, kept properties held), local vs svm",
        description="Ask the run's generator for targets the way generate and edit do, from random starting "
        "latents, by each steering method of the label_score section, and measure the result exactly on the "
        "generated patches: single targets at the 5th-95th percentile of each direction's property, joint "
        "targets (tuf x psep, tuf x r_paper, psep x r_paper) on a 3 x 3 grid of their quantiles and on a 3 x 3 grid "
        "of the samples' joint support (the second's quantiles near each value of the first), and single targets with "
        "each other property kept in turn. Writes RUN_DIR/directions/label_score.parquet (one row per request: "
        "met, held, the support of the target among the samples, start, achieved and drift of every property) "
        "and label_score.json (the fractions per method, kind and property).",
        epilog=EPILOG,
    )
    score.add_argument("--run-dir", required=True, help="a pipeline run's results_dir (generator, directions, samples)")
    _add_stage_options(score, "label_score", seed_help="seed of the starting latents", threads_help="CPU threads")
    score.set_defaults(func=_cmd_score_directions)

    gen = commands.add_parser(
        "generate",
        help="generate active regions that have given physical properties",
        description="Start from N sampled latents near the targets (drawn among the 5N nearest, at least 50) and "
        "move each until the targets are met, holding --keep properties at their starting values: by default "
        "along its own local gradients (the shortest latent step that moves the named properties and holds the "
        "kept ones, measured exactly on the generated patch at every iteration); --method svm steps along the "
        "paper's SVM directions instead. "
        "Targets are in paper units (tuf [kG], psep [fraction of the patch diagonal], r_paper, ...) or, for "
        "a fixed_scale run, usflux [Mx] and psep_mm [Mm]. Writes OUT_DIR/generated_NNN.fits (field in G; "
        "targets, achieved values and the latent in the header), generated.png, generated.csv (target vs. "
        "achieved) and latents.npy (for sharpgen edit); a rerun into the same OUT_DIR replaces them (older "
        "generated_NNN.fits beyond the new --n are removed). A target outside what the model produces is "
        "refused with the reachable range; so is a quantity given in both units (usflux and tuf), a target "
        "that is also kept, or a name given twice, before anything is written.",
        epilog="Example: sharpgen generate --target usflux=1.5e22 psep_mm=80 --n 8. " + EPILOG,
    )
    edit = commands.add_parser(
        "edit",
        help="move latents (from generate or invert) along property directions",
        description="Move latents along property directions, by steps (--step NAME=STEPS, latent units; |z| is "
        f"about 10, so |STEPS| <= {MAX_EDIT_STEP:g}) or to target values (--target NAME=VALUE), holding --keep "
        "properties fixed. With --method local (default) a step changes NAME by what STEPS latent units along "
        "its direction change it on average (fit_directions' calibrated slope), aimed at per patch along the "
        "latent's own gradients while the kept properties hold; --method svm moves STEPS latent units along the "
        "SVM direction (orthogonal to the kept ones' directions), the paper's edit. --target works as generate "
        "does. Writes OUT_DIR/edited_NNN.fits, edited.png, edited.csv (per patch: aimed, achieved, kept start and "
        "drift) and latents.npy; a rerun into the same OUT_DIR replaces them.",
        epilog="Example: sharpgen edit --latents results/default/generated/latents.npy --step r_paper=2 --keep tuf. "
        + EPILOG,
    )
    for command in (gen, edit):
        command.add_argument(
            "--run-dir", default="results/default", help="a pipeline run's results_dir (default: results/default)"
        )
        command.add_argument("--keep", nargs="+", metavar="NAME", help="properties to hold at their starting values")
        command.add_argument(
            "--tolerance", type=float, default=0.05, help="relative tolerance of a met target, 0 to 1 (default: 0.05)"
        )
        command.add_argument(
            "--method", choices=STEERING_METHODS, default="local",
            help="how targets are reached: local = each latent's own gradients (default), svm = the paper's SVM "
            "directions; a target or --keep without a soft gradient (physical-unit-only properties) uses svm",
        )  # fmt: skip
        command.add_argument("--out-dir", help="output directory (default: RUN_DIR/generated or RUN_DIR/edited)")
        command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
        command.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (default: 1)")
    gen.add_argument("--target", nargs="+", metavar="NAME=VALUE", help="wanted values, e.g. usflux=1.5e22 psep_mm=80")
    gen.add_argument("--n", type=_positive_int, default=8, help="patches to generate (default: 8)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the starting latents (default: 0)")
    gen.set_defaults(func=_cmd_generate)
    edit.add_argument("--latents", required=True, help="latents.npy written by generate, edit, sample or invert")
    edit.add_argument("--rows", nargs="+", type=int, metavar="ROW", help="only these rows of the latents file")
    edit.add_argument("--step", nargs="+", metavar="NAME=STEPS", help="move by STEPS along NAME's direction")
    edit.add_argument("--target", nargs="+", metavar="NAME=VALUE", help="move until NAME reaches VALUE")
    edit.set_defaults(func=_cmd_edit)

    query = commands.add_parser(
        "query",
        help="find real SHARP patches that look like a generated patch or a FITS file",
        description="Make query patches (generated for --target values as in `sharpgen generate`, generated from "
        "--latents, or read from --fits files and normalized as the run's data/normalization.json says), embed "
        "them with the run's SimSiam encoder and return the K most similar real patches of its index, optionally "
        "filtered by time, HARP number, latitude or split. Writes OUT_DIR/matches.csv (per query and match: rank, "
        "dataset row, cosine similarity, record, HARP and NOAA numbers, T_REC, latitude, split, the match's "
        "properties and the query's as query_<name>) and query.png (queries and matches side by side); --target "
        "also writes the generated queries as in `sharpgen generate`.",
        epilog="Example: sharpgen query --target usflux=1.5e22 psep_mm=80 --k 9 --abs-latitude 10 30. " + EPILOG,
    )
    query.add_argument(
        "--run-dir", default="results/default", help="a pipeline run's results_dir (default: results/default)"
    )
    source = query.add_mutually_exclusive_group(required=True)
    source.add_argument("--target", nargs="+", metavar="NAME=VALUE", help="generate queries with these properties")
    source.add_argument("--latents", help="latents.npy (from generate, edit, sample or invert) to generate queries")
    source.add_argument("--fits", nargs="+", metavar="FILE.fits", help="SHARP CEA FITS files (field in G)")
    query.add_argument("--rows", nargs="+", type=int, metavar="ROW", help="only these rows of --latents")
    query.add_argument(
        "--configfile",
        help="not needed: --fits files are normalized as the run's data/normalization.json says; a config given "
        "here must agree with it (normalize section, image_size)",
    )
    query.add_argument("--n", type=_positive_int, default=1, help="queries to generate for --target (default: 1)")
    query.add_argument("--seed", type=int, default=0, help="seed of the generated queries' starts (default: 0)")
    query.add_argument("--keep", nargs="+", metavar="NAME", help="with --target: hold these properties fixed")
    query.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance of a met target")
    query.add_argument(
        "--method", choices=STEERING_METHODS, default="local", help="with --target: as in sharpgen generate"
    )
    query.add_argument(
        "--k",
        type=_positive_int,
        default=9,
        help=f"matches per query, at most the index size (default: 9); query.png shows the first {PANEL_MATCHES}",
    )
    query.add_argument(
        "--one-per-harp", action="store_true",
        help="only the best observation of each HARP (else a SHARP series can fill the k matches with one region)",
    )  # fmt: skip
    query.add_argument("--time-range", nargs=2, metavar=("START", "END"), help="T_REC range, JSOC or ISO format")
    query.add_argument("--harp", nargs="+", type=int, metavar="HARPNUM", help="only these HARP numbers")
    query.add_argument("--latitude", nargs=2, type=float, metavar=("MIN", "MAX"), help="latitude band [deg]")
    query.add_argument(
        "--abs-latitude", nargs=2, type=float, metavar=("MIN", "MAX"), help="|latitude| band [deg], both hemispheres"
    )
    query.add_argument("--split", nargs="+", choices=("train", "val", "test"), help="only these dataset splits")
    query.add_argument("--out-dir", help="output directory (default: RUN_DIR/query)")
    query.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    query.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (default: 1)")
    query.set_defaults(func=_cmd_query)

    inv = commands.add_parser(
        "invert",
        help="project real patches into the GAN latent space (for sharpgen edit)",
        description="Find the latent z whose generated patch best reproduces each real patch: SGD with momentum "
        "through the frozen generator from several random starts, minimizing the paper's masked MSE (weight 1 "
        "where |B| > 50 G, 0.5 elsewhere); the best iterate of all restarts is kept. Writes OUT_DIR/latents.npy "
        "((N, 100) float32, what `sharpgen edit` reads), reconstructions.npy, inversion.csv (label, loss, "
        "rmse_gauss [G], best_restart, latent_norm, start_loss) and inversion.json.",
        epilog=EPILOG,
    )
    inv.add_argument("--generator", required=True, help="generator.pt written by train-gan")
    inv.add_argument("--out-dir", required=True, help="directory that receives latents.npy and inversion.csv")
    targets = inv.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--fits", nargs="+", metavar="FILE.fits", help="SHARP CEA FITS files, normalized as the generator's run did"
    )
    targets.add_argument(
        "--rows", nargs="+", type=int, metavar="ROW", help="rows of the normalized dataset (needs --data-dir)"
    )
    inv.add_argument("--data-dir", help="directory holding patches.zarr and patches.parquet (with --rows)")
    inv.add_argument(
        "--run-dir",
        help="with --fits: the run whose data/normalization.json normalizes the files (default: the run the "
        "generator lies in, RUN_DIR/gan/generator.pt)",
    )
    inv.add_argument(
        "--configfile",
        help="not needed: a config given here must agree with the run's normalization (normalize section, image_size)",
    )
    inv.add_argument(
        "--settings",
        type=_json_mapping,
        help="JSON object overriding restarts (10), iterations (1000), optimizer (adam; sgd = the paper's), "
        "lr (0.05), momentum (0.9), threshold "
        "(0.05 = 50 G) or weak_weight (0.5)",
    )
    inv.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default: auto)")
    inv.add_argument("--seed", type=int, default=23, help="seed of the restarts' starting latents (default: 23)")
    inv.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for PyTorch (default: 1)")
    inv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    inv.set_defaults(func=_cmd_invert)

    expl = commands.add_parser(
        "explore",
        help="serve an interactive page over a finished run: sliders -> generated patch -> real matches",
        description="Serve a page (http://127.0.0.1:PORT/) over the artefacts of a finished run: one slider per "
        "steerable property (paper units; Mx and Mm on fixed_scale runs), a seed, 'hold' toggles, the generated "
        "patch with its polarity centroids and PIL mask, target vs. achieved properties, a traversal strip and "
        "the most similar real SHARP patches (HARP/NOAA, T_REC, similarity), with FITS and CSV downloads. "
        "Binds to the loopback interface unless --host says otherwise. Ctrl-C or SIGTERM stops it.",
        epilog="Example: sharpgen explore --results results/default --port 8765. " + EPILOG,
    )
    expl.add_argument(
        "--results", "--run-dir", dest="results", metavar="DIR", default="results/default",
        help="a finished run's results_dir (default: results/default)",
    )  # fmt: skip
    expl.add_argument("--port", type=int, metavar="N", default=8765, help="TCP port; 0: any free one (default: 8765)")
    expl.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; anything else is reachable by others)"
    )
    expl.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    expl.add_argument("--threads", type=_positive_int, default=1, help="CPU threads per computation (default: 1)")
    expl.add_argument(
        "--workers", type=_positive_int,
        help="requests computed at once, each in its own process with the run loaded (default: the CPUs, at most 4)",
    )  # fmt: skip
    expl.add_argument(
        "--in-process", action="store_true",
        help="compute in the server's own threads instead of worker processes: less memory, slower under load",
    )  # fmt: skip
    expl.add_argument("--verbose", action="store_true", help="log every request")
    expl.set_defaults(func=_cmd_explore)

    conf = commands.add_parser(
        "config",
        help="validate a pipeline config file and print it with every default filled in",
        description="Validate a pipeline config YAML against config/schema.yaml and print the full config.",
    )
    conf.add_argument("configfile", help="config YAML, e.g. config/config.yaml")
    conf.set_defaults(func=_cmd_config)
    _add_figure_command(commands)
    return parser


def _cmd_figure(args: argparse.Namespace) -> int:
    from .figures.registry import Options, make_figure, numbers_path

    options = Options(
        seed=args.seed,
        n_patches=args.n_patches,
        max_patches=args.max_patches,
        split=args.split,
        n_thumbnails=args.thumbnails,
        rulegraph=args.rulegraph,
        renderer=args.renderer,
    )
    make_figure(args.name, args.results, args.out, options)
    print(f"figure {args.name} -> {args.out} (numbers: {numbers_path(args.out)})", file=sys.stderr)
    return 0


def _add_figure_command(commands) -> None:
    """``sharpgen figure NAME``: one figure of a finished run (what the figure_* rules call)."""
    from .figures.registry import FIGURES

    names = "\n".join(f"  {name:<14}{spec.help}" for name, spec in FIGURES.items())
    fig = commands.add_parser(
        "figure",
        help="draw one figure of a pipeline run (PNG + its key numbers as JSON)",
        description="Draw figure NAME of the run in --results into the PNG --out (written atomically) and its key "
        "numbers (KS statistics, spectral slopes, final losses, ...) into the same path with .json. Names "
        f"(figure numbers as in the paper):\n{names}",
        epilog="Example: sharpgen figure properties --results results/default --out /tmp/properties.png. " + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fig.add_argument("name", choices=list(FIGURES), metavar="NAME", help="which figure (see the list above)")
    fig.add_argument("--results", default="results/default", help="a run's results_dir (default: results/default)")
    fig.add_argument("--out", required=True, help="PNG to write; NAME's numbers go beside it as .json")
    fig.add_argument("--seed", type=int, default=23, help="seed of the random patches shown (default: 23)")
    fig.add_argument("--split", default="train", help="real patches compared with generated ones (default: train)")
    fig.add_argument("--n-patches", type=_positive_int, default=16, help="patches per side in 'patches' (default: 16)")
    fig.add_argument(
        "--max-patches", type=_positive_int, default=2000, help="patches per set in 'spectra' (default: 2000)"
    )
    fig.add_argument("--thumbnails", type=_positive_int, default=36, help="thumbnails in 'embedding' (default: 36)")
    fig.add_argument("--rulegraph", metavar="DOT", help="'pipeline': the output of `snakemake --rulegraph`")
    fig.add_argument(
        "--renderer",
        choices=("auto", "dot", "matplotlib"),
        default="auto",
        help="'pipeline': Graphviz dot, matplotlib, or dot when installed (default: auto)",
    )
    fig.set_defaults(func=_cmd_figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sharpgen`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SharpgenError as exc:
        print(f"sharpgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sharpgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
