"""Graph padding budgets: fixed node/edge counts per device micro-batch, from dataset statistics.

A budget is what every packed ``jraph.GraphsTuple`` of a run is padded to, so a jitted model
compiles once. ``n_node`` includes at least one padding node (the padding graph owns all pad
nodes and pad edges, as in ``jraph.pad_with_graphs``), so a micro-batch holds real graphs with
at most ``n_node - 1`` nodes and ``n_edge`` edges in total.
"""

from __future__ import annotations

import dataclasses
import math

from mmjax.data.material import RecordError


@dataclasses.dataclass(frozen=True)
class GraphBudget:
    """Per-device micro-batch padding: ``n_node`` nodes (incl. >= 1 pad node), ``n_edge`` edges."""

    n_node: int
    n_edge: int

    def __post_init__(self):
        if self.n_node < 2 or self.n_edge < 1:
            raise ValueError(f"GraphBudget needs n_node >= 2 and n_edge >= 1, got {self}")

    def fits(self, nodes: int, edges: int) -> bool:
        """Whether a graph set with ``nodes`` real nodes and ``edges`` real edges fits."""
        return nodes <= self.n_node - 1 and edges <= self.n_edge


def round_up(value: float, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value`` (and >= ``multiple``)."""
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


def _get(manifest, name):
    return manifest[name] if isinstance(manifest, dict) else getattr(manifest, name)


def _statistic(summary: dict, percentile: float | None) -> float:
    if percentile is None:
        return float(summary["mean"])
    table = summary.get("percentiles", {})
    key = str(float(percentile))
    if key not in table:
        raise ValueError(f"percentile {percentile} is not in the manifest; stored: {sorted(table, key=float)}")
    return float(table[key])


def budgets_from_manifest(manifest, batch_size: int, percentile: float | None = None, multiple: int = 64,
                          headroom: float = 1.0) -> GraphBudget:
    """Budget for ``batch_size`` material slots per device micro-batch.

    With s = the per-material node (edge) count's mean (``percentile=None``) or the given
    percentile (one of the manifest's: 50, 75, 90, 95, 99, 99.9, 100), the budget is
    ``s * batch_size * headroom`` (+1 pad node), never less than the largest single material
    (+1), rounded up to a multiple of ``multiple``. A mean budget lets about half the
    micro-batches spill a material to the next one; p90/p95 rarely spill.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    padding = _get(manifest, "padding")
    if "crystal/nodes" not in padding or not padding["crystal/nodes"].get("count"):
        raise ValueError("the dataset has no crystal graphs, so it needs no graph budget")
    nodes, edges = padding["crystal/nodes"], padding["crystal/edges"]
    n_node = max(_statistic(nodes, percentile) * batch_size * headroom + 1, nodes["max"] + 1)
    n_edge = max(_statistic(edges, percentile) * batch_size * headroom, edges["max"], 1)
    return GraphBudget(round_up(n_node, multiple), round_up(n_edge, multiple))


def check_budget(manifest, budget: GraphBudget) -> None:
    """Raise ``RecordError`` naming the largest material when it alone does not fit ``budget``."""
    padding = _get(manifest, "padding")
    for what, limit in (("nodes", budget.n_node - 1), ("edges", budget.n_edge)):
        summary = padding.get(f"crystal/{what}")
        if summary and summary.get("count") and summary["max"] > limit:
            raise RecordError(summary["max_id"], f"has {summary['max']} graph {what}, more than the budget allows "
                                                 f"({limit}; budget {budget}); raise the budget")
