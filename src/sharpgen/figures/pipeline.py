"""Fig. 1: the pipeline schematic, from `snakemake --rulegraph` (Graphviz dot, or matplotlib without it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import SharpgenError
from ..plotting import get_pyplot, save_figure

if TYPE_CHECKING:
    pass

STAGE_NOTES = {
    "retrieve": "SHARP CEA records\n(JSOC, FITS folder or synthetic)",
    "normalize": "clip to ±1 kG, S×S patches\n+ physical properties",
    "train_gan": "GAN: z ~ N(0, I) → patch",
    "sample": "latents → patches\n+ their properties",
    "fit_directions": "linear SVM per property\n→ latent directions",
    "train_ssl": "SimSiam encoder\nof real patches",
    "build_index": "embeddings + FAISS index\n(nearest real match)",
    "evaluate_retrieval": "generated queries → real matches,\nscored against baselines",
}
"""One-line description of each known rule, printed under its name in the matplotlib pipeline schematic."""


# --------------------------------------------------------------------------------------------- input checks


def parse_rulegraph(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes ``{id: rule name}`` and edges ``[(from_id, to_id)]`` of ``snakemake --rulegraph`` DOT text."""
    nodes = dict(re.findall(r'^\s*(\w+)\s*\[\s*label\s*=\s*"([^"]+)"', dot, flags=re.MULTILINE))
    edges = re.findall(r"^\s*(\w+)\s*->\s*(\w+)", dot, flags=re.MULTILINE)
    if not nodes:
        raise SharpgenError("no rules found in the rule graph (expected the DOT text of `snakemake --rulegraph`)")
    unknown = {node for edge in edges for node in edge} - set(nodes)
    if unknown:
        raise SharpgenError(f"the rule graph has edges to undeclared nodes: {', '.join(sorted(unknown))}")
    return nodes, edges


def _collapse_rules(nodes: dict[str, str], edges: list[tuple[str, str]]) -> tuple[dict[str, str], set]:
    """Drop the ``all`` target and merge every ``figure_*`` rule into one node: the schematic shows stages."""
    figures = {node for node, name in nodes.items() if name.startswith("figure_")}
    kept = {node: name for node, name in nodes.items() if name != "all" and node not in figures}
    if figures:
        kept["figures"] = f"figures ({len(figures)} rules)"
    merged = set()
    for source, target in edges:
        source, target = ("figures" if n in figures else n for n in (source, target))
        if source in kept and target in kept and source != target:
            merged.add((source, target))
    return kept, merged


def _transitive_reduction(edges: set) -> set:
    """Drop every edge ``a -> c`` that a longer path ``a -> b -> ... -> c`` implies (the graph is acyclic)."""
    successors: dict[str, set] = {}
    for source, target in edges:
        successors.setdefault(source, set()).add(target)

    def reachable(start: str, skip_direct: str) -> bool:
        todo = [n for n in successors.get(start, ()) if n != skip_direct]
        seen = set()
        while todo:
            node = todo.pop()
            if node == skip_direct:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(successors.get(node, ()))
        return False

    return {(source, target) for source, target in edges if not reachable(source, target)}


def _layers(nodes: dict[str, str], edges: set) -> dict[str, int]:
    """Longest-path layer of every node (sources at layer 0)."""
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for source, target in edges:
            if layer[target] < layer[source] + 1:
                layer[target], changed = layer[source] + 1, True
        if not changed:
            return layer
    raise SharpgenError("the rule graph has a cycle")


def plot_pipeline(rulegraph_dot: str, path: str | os.PathLike, renderer: str = "auto") -> dict:
    """Fig. 1: the pipeline as its Snakemake rule graph.

    ``renderer``: ``dot`` renders the DOT text with Graphviz (``dot -Tpng``, as snakemake's own ``--rulegraph``
    pictures look); ``matplotlib`` lays the stages out left to right (longest-path layers) with a note of what
    each known stage does, the ``all`` target dropped, the ``figure_*`` rules merged into one node, and no arrow
    that a longer path implies (transitive reduction: "runs after", not every file read); ``auto`` uses
    Graphviz when ``dot`` is on PATH, else matplotlib (Graphviz is never required).
    """
    nodes, edges = parse_rulegraph(rulegraph_dot)
    if renderer not in ("auto", "dot", "matplotlib"):
        raise SharpgenError(f"unknown renderer {renderer!r} (choose auto, dot or matplotlib)")
    dot_binary = shutil.which("dot")
    if renderer == "dot" and dot_binary is None:
        raise SharpgenError("renderer 'dot' needs Graphviz's `dot` on PATH; use --renderer matplotlib")
    numbers = {"rules": sorted(set(nodes.values()) - {"all"}), "edges": len(edges)}
    if renderer == "dot" or (renderer == "auto" and dot_binary):
        result = subprocess.run([dot_binary, "-Tpng", "-Gdpi=100"], input=rulegraph_dot.encode(), capture_output=True)
        if result.returncode != 0 or not result.stdout.startswith(b"\x89PNG"):
            raise SharpgenError(f"`dot -Tpng` failed: {result.stderr.decode(errors='replace').strip()[:300]}")
        write_bytes_atomic(path, result.stdout)
        return {**numbers, "renderer": "dot"}

    shown, merged = _collapse_rules(nodes, edges)
    if not shown:
        raise SharpgenError("the rule graph has no rule besides `all` to draw")
    layer = _layers(shown, merged)  # raises on a cycle, before the reduction could loop
    merged = _transitive_reduction(merged)
    columns: dict[int, list[str]] = {}
    for node in sorted(shown, key=lambda n: (layer[n], shown[n])):
        columns.setdefault(layer[node], []).append(node)
    # Order each column by the mean row of its predecessors (fewer crossings), then centre it.
    row: dict[str, float] = {}
    for depth in sorted(columns):
        members = columns[depth]
        if depth:
            parents = {n: [row[s] for s, t in merged if t == n and s in row] for n in members}
            members.sort(key=lambda n: (-np.mean(parents[n]) if parents[n] else 0.0, shown[n]))  # top row first
        for i, node in enumerate(members):
            row[node] = (len(members) - 1) / 2 - i
    width, height, dx, dy = 2.3, 0.95, 3.1, 1.35
    pyplot = get_pyplot()
    tallest = max(len(members) for members in columns.values())
    figure, axis = pyplot.subplots(figsize=(1.0 + 2.2 * len(columns), 1.2 + 1.05 * tallest))
    from matplotlib.patches import FancyBboxPatch

    for node, name in shown.items():
        x, y = layer[node] * dx, row[node] * dy
        axis.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.02,rounding_size=0.15",
                facecolor="#e8f0fb" if node != "figures" else "#f4f4f4",
                edgecolor="#4a6fa5",
                zorder=2,
            )
        )
        note = STAGE_NOTES.get(name, "plots → report" if node == "figures" else "")
        axis.text(x, y + (0.2 if note else 0.0), name, ha="center", va="center", fontsize=8.5, weight="bold", zorder=3)
        if note:
            axis.text(x, y - 0.16, note, ha="center", va="center", fontsize=6.3, linespacing=1.1, zorder=3)
    for source, target in sorted(merged):
        axis.annotate(
            "",
            xy=(layer[target] * dx - width / 2, row[target] * dy),
            xytext=(layer[source] * dx + width / 2, row[source] * dy),
            arrowprops={"arrowstyle": "-|>", "color": "0.45", "lw": 1.1, "shrinkA": 2, "shrinkB": 2},
            zorder=1,
        )
    axis.set_xlim(-width / 2 - 0.2, max(layer.values()) * dx + width / 2 + 0.2)
    axis.set_ylim(-(tallest - 1) / 2 * dy - height / 2 - 0.2, (tallest - 1) / 2 * dy + height / 2 + 0.2)
    axis.set_axis_off()
    axis.set_title(f"sharpgen pipeline: {len(numbers['rules'])} Snakemake rules, data flows left to right", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return {**numbers, "renderer": "matplotlib", "arrows": len(merged)}


# ------------------------------------------------------------------------------- fig. 2: real vs generated
