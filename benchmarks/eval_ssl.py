"""An SSL encoder variant trained and scored as the pipeline would, as one JSON line.

Trains ``train_ssl`` with the schema's ``ssl`` defaults overridden by ``--settings`` on the normalized data of
``--data`` (a run's ``data/``), embeds and indexes every patch, then runs ``evaluate_retrieval`` with the
generated queries of ``--samples`` (a run's ``samples/``); ``--index-settings`` overrides the ``index`` section
(the hybrid search's ``physics_weight``, ``orientation_weight``). Prints the top-1 Pearson per property and method,
the orientation agreement, the effective rank and top-1 cosine spread of the index, and same-region recall.
``--out`` is a scratch results directory (``data``/``samples`` become links; an existing encoder there is
reused, so a variant is trained once).

    .venv/bin/python benchmarks/eval_ssl.py --data results/default/data --samples results/default/samples \\
        --out /tmp/ssl-simsiam --settings '{"objective": "simsiam"}'
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from sharpgen.config import build_settings
from sharpgen.retrieval.embed import embed_dataset
from sharpgen.retrieval.evaluate import RetrievalEvalSettings, evaluate_retrieval
from sharpgen.retrieval.index import IndexSettings, build_index_from_files
from sharpgen.retrieval.train import SslSettings, train_ssl
from sharpgen.run import RunLayout


def summary(document: dict) -> dict:
    """The numbers of ``evaluation.json`` that compare encoders."""
    methods = document["methods"]
    agreement = {m: {k: v for k, v in d["agreement"].items() if not k.startswith("n_")} for m, d in methods.items()}
    return {
        "pearson_top1": {m: {p: s["pearson"] for p, s in d["top1"].items()} for m, d in methods.items()},
        "agreement": agreement,
        "embedding": document["embedding"],
        "same_region": document["same_region"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a run's data/ (patches.zarr, patches.parquet)")
    parser.add_argument("--samples", required=True, help="a run's samples/ (the generated queries)")
    parser.add_argument("--out", required=True, help="scratch results directory for this variant")
    parser.add_argument("--settings", default="{}", help="JSON overrides of the ssl section")
    parser.add_argument(
        "--index-settings", default="{}", help='JSON overrides of the index section, e.g. {"physics_weight": 0}'
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = RunLayout(Path(args.out))
    layout.folder("encoder").mkdir(parents=True, exist_ok=True)
    for key, target in (("patches", args.data), ("sample_table", args.samples)):
        link = layout.folder(key)
        if not link.exists():
            os.symlink(Path(target).resolve(), link)
    settings = build_settings(SslSettings, {**json.loads(args.settings), "image_size": args.image_size})
    if not layout.path("encoder").is_file():
        train_ssl(layout.folder("patches"), layout.folder("encoder"), settings, args.seed, "cpu", args.threads, False)
    embed_dataset(layout.folder("patches"), layout.path("encoder"), layout.path("embeddings"), progress=False)
    index_settings = build_settings(IndexSettings, json.loads(args.index_settings))
    build_index_from_files(
        layout.path("embeddings"), layout.path("patch_table"), layout.path("index"), index_settings,
        image_size=args.image_size,
    )  # fmt: skip
    document = evaluate_retrieval(
        layout.results_dir, layout.folder("evaluation"), build_settings(RetrievalEvalSettings), args.seed, "cpu"
    )
    print(json.dumps({"settings": json.loads(args.settings), "index": json.loads(args.index_settings),
                      **summary(document)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
