"""Reference Batch assembly, record by record (the tests' yardstick for the column-wise path).

`mmjax.data.pipeline.BatchAssembler.assemble_indices` reads every batch column-wise; this module
builds the same Batch the plain way, from per-record dicts (``dataset.record(i, keys)``), so the
tests can compare the two leaf by leaf. ``benchmarks/pipeline.py`` times it for the per-record
column of its table.
"""

from __future__ import annotations

from typing import Any

import jraph
import numpy as np

from mmjax.data.modalities import presence_key
from mmjax.data.pipeline import BatchIterator
from mmjax.data.schema import OPTIONAL_EDGE_KEYS


def _stack_rows(out: np.ndarray, dev: int, slots: list, rows: list) -> None:
    if slots:
        out[dev, np.asarray(slots)] = np.stack(rows)


def assemble_records(asm, device_records: list[list[dict]]) -> dict:
    """The Batch of ``asm`` (a `BatchAssembler`) from ``device_records[d]`` = the records (at most
    B / n_dev) of device d's micro-batch."""
    D, B = asm.n_dev, asm.slots
    batch: dict[str, Any] = {"slot_valid": np.zeros((D, B), bool), "present": {}}
    for m in asm.modalities:
        batch["present"][m] = np.zeros((D, B), bool)
    for d, recs in enumerate(device_records):
        batch["slot_valid"][d, :len(recs)] = True
        for m in asm.modalities:
            batch["present"][m][d, :len(recs)] = [presence_key(m) in r for r in recs]
    if "crystal" in asm.modalities:
        batch["crystal"] = _graphs(asm, device_records)
    if "composition" in asm.modalities:
        batch["composition"] = _composition(asm, device_records)
    for m, key in (("xrd", "xrd"), ("text", "text_embedding"), ("charge_density", "charge_density")):
        if m in asm.modalities:
            out = np.zeros((D, B, *asm.schema[key]["shape"]), np.float32)
            for d, recs in enumerate(device_records):
                slots = [i for i, r in enumerate(recs) if key in r]
                _stack_rows(out, d, slots, [recs[i][key] for i in slots])
            batch[m] = out
    if "dos" in asm.modalities:
        L = asm.dos_grid.shape[0]
        dens, mask = np.zeros((D, B, L), np.float32), np.zeros((D, B, L), bool)
        for d, recs in enumerate(device_records):
            slots = [i for i, r in enumerate(recs) if "dos/densities" in r]
            _stack_rows(dens, d, slots, [recs[i]["dos/densities"] for i in slots])
            _stack_rows(mask, d, slots, [recs[i]["dos/mask"] for i in slots])
        batch["dos"] = {"energies": np.broadcast_to(asm.dos_grid, (D, B, L)).copy(), "densities": dens, "mask": mask}
    if asm.targets:
        batch["targets"], batch["target_mask"] = {}, {}
        for name, key, regression, mean, std, shape in asm.targets:
            vals = np.zeros((D, B, *shape), np.float32 if regression else np.int32)
            ok = np.zeros((D, B, *shape), bool)
            for d, recs in enumerate(device_records):
                for i, r in enumerate(recs):
                    if key is not None and key in r:
                        vals[d, i] = r[key]
                        ok[d, i] = True
            if regression:  # written out, not mmjax.data.normalise: this is the reference
                ok &= np.isfinite(vals)
                vals = np.where(ok, (vals - mean) / std, 0.0).astype(np.float32)
            batch["targets"][name], batch["target_mask"][name] = vals, ok
    return batch


def _graphs(asm, device_records: list[list[dict]]) -> jraph.GraphsTuple:
    D, B = asm.n_dev, asm.slots
    N, E = asm.budget.n_node, asm.budget.n_edge
    nodes = np.zeros((D, N), np.int32)
    senders = np.zeros((D, E), np.int32)
    receivers = np.zeros((D, E), np.int32)
    dist = np.zeros((D, E), np.float32)
    extra = {k: np.zeros((D, E), OPTIONAL_EDGE_KEYS[k][1]) for k in asm.edge_extra}
    n_node = np.zeros((D, B + 1), np.int32)
    n_edge = np.zeros((D, B + 1), np.int32)
    empty_i = np.zeros(0, np.int32)
    for d, recs in enumerate(device_records):
        an = [r.get("crystal/atomic_numbers", empty_i) for r in recs]
        snd = [r.get("crystal/senders", empty_i) for r in recs]
        nn = np.fromiter((len(a) for a in an), np.int32, len(recs))
        ne = np.fromiter((len(s) for s in snd), np.int32, len(recs))
        tn, te = int(nn.sum()), int(ne.sum())
        if not asm.budget.fits(tn, te):
            raise ValueError(f"micro-batch of {tn} nodes / {te} edges exceeds budget {asm.budget}")
        offsets = np.zeros(len(recs), np.int32)
        np.cumsum(nn[:-1], out=offsets[1:])
        shift = np.repeat(offsets, ne)
        if tn:
            nodes[d, :tn] = np.concatenate(an)
        if te:
            senders[d, :te] = np.concatenate(snd) + shift
            receivers[d, :te] = np.concatenate([r.get("crystal/receivers", empty_i) for r in recs]) + shift
            dist[d, :te] = np.concatenate([r.get("crystal/distances", empty_i) for r in recs])
            for k, arr in extra.items():  # a record without the optional key: all-zero edges
                arr[d, :te] = np.concatenate([r[k] if k in r else np.zeros(len(s), arr.dtype)
                                              for r, s in zip(recs, snd)])
        senders[d, te:] = tn  # padding edges join the first padding node (graph B)
        receivers[d, te:] = tn
        n_node[d, :len(recs)] = nn
        n_edge[d, :len(recs)] = ne
        n_node[d, B] = N - tn
        n_edge[d, B] = E - te
    edges = {"distances": dist}
    for k, arr in extra.items():
        edges[OPTIONAL_EDGE_KEYS[k][0]] = arr
    return jraph.GraphsTuple(nodes={"atomic_numbers": nodes}, edges=edges, senders=senders,
                             receivers=receivers, n_node=n_node, n_edge=n_edge, globals=None)


def _composition(asm, device_records) -> dict:
    D, B, M = asm.n_dev, asm.slots, asm.max_elements
    z = np.zeros((D, B, M), np.int32)
    frac = np.zeros((D, B, M), np.float32)
    mask = np.zeros((D, B, M), bool)
    for d, recs in enumerate(device_records):
        slots = [i for i, r in enumerate(recs) if "composition/atomic_numbers" in r]
        if not slots:
            continue
        parts = [recs[i]["composition/atomic_numbers"] for i in slots]
        lengths = np.array([len(p) for p in parts])
        if lengths.max() > M:
            raise ValueError(f"a composition has {lengths.max()} elements, more than max_elements={M}")
        rows = np.repeat(np.asarray(slots), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        z[d, rows, cols] = np.concatenate(parts)
        frac[d, rows, cols] = np.concatenate([recs[i]["composition/fractions"] for i in slots])
        mask[d, rows, cols] = True
    return {"atomic_numbers": z, "fractions": frac, "mask": mask}


class PerRecordBatches:
    """The batches of a `BatchIterator` (same stream, packing, state and ``last_indices``),
    assembled record by record with `assemble_records`."""

    def __init__(self, it: BatchIterator):
        self.it = it

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        groups = self.it._next_groups()
        asm, ds = self.it.assembler, self.it.dataset
        return assemble_records(asm, [[ds.record(i, asm.keys) for i in g] for g in groups])

    @property
    def last_indices(self):
        return self.it.last_indices

    def get_state(self) -> dict:
        return self.it.get_state()
