#!/bin/sh
# Snakemake runs this once, inside the environment it has just created next to this file's .yaml, from its
# working directory (the checkout). It installs the checkout's sharpgen package editable and without
# dependencies (the .yaml's conda packages provide them), so jobs always run the checkout's code.
# (A pip line `-e ../` in the .yaml would not do: Snakemake copies the .yaml to .snakemake/conda/ first.)
set -eu
if ! grep -qs '^name = "sharpgen"' pyproject.toml; then
    echo "post-deploy: run snakemake from the sharpgen checkout (no sharpgen pyproject.toml in $PWD)" >&2
    exit 1
fi
python -m pip install --quiet --no-deps --no-build-isolation --editable .
