"""``dos``: the density of states on the dataset's one Fermi-shifted energy grid (the manifest's
``grids["dos/energies"]``), with a mask of the energies the source covered (`mmjax.data.schema`)."""

from __future__ import annotations

import numpy as np

from mmjax.data.material import RecordError
from mmjax.data.modalities.base import Modality, Slots, featurizer, run_featurizer


class Dos(Modality):
    name = "dos"
    presence_key = "dos/densities"
    scale_keys = ("dos/densities",)
    record_dtypes = {"dos/densities": np.float32, "dos/mask": np.bool_}
    scale_masks = {"dos/densities": "dos/mask"}  # moments of the covered energies only
    shared_leaves = ("energies",)  # the dataset's one grid
    encoder_inputs = ("energies", "densities", "mask")

    def add_features(self, material, spec, rec: dict) -> None:
        dos, rid = material.dos, material.id
        if dos is None:
            return
        dens = np.asarray(dos.densities, np.float64)
        if dens.size == 0 or not np.isfinite(dens).any():
            raise RecordError(rid, "DOS has no finite density value")
        d = run_featurizer(rid, "dos", featurizer("dos_features"), dos.energies, dos.densities,
                           efermi=dos.efermi, grid=spec.dos_grid)
        rec["dos/densities"] = np.asarray(d["densities"], np.float32)
        rec["dos/mask"] = np.asarray(d["mask"], bool)
        if not np.isfinite(rec["dos/densities"]).all():
            raise RecordError(rid, "DOS features have non-finite values after repair")

    def grids(self, spec, schema: dict) -> dict:
        return {"dos/energies": spec.dos_grid.tolist()} if "dos/densities" in schema else {}

    def setup(self, assembler, manifest) -> None:
        grid = manifest.grids.get("dos/energies")
        if grid is None:
            raise ValueError("the manifest has no grids['dos/energies'] for the DOS modality")
        assembler.dos_grid = np.asarray(grid, np.float32)

    def columns(self, assembler) -> list[str]:
        return ["dos/densities", "dos/mask"]

    def row_nbytes(self, assembler) -> int:
        return 9 * len(assembler.dos_grid)  # float32 densities and energies, bool mask

    def assemble(self, assembler, slots: Slots) -> dict:
        D, B = slots.n_dev, slots.n_slots
        L = assembler.dos_grid.shape[0]
        dens, mask = np.zeros((D, B, L), np.float32), np.zeros((D, B, L), bool)
        dens[slots.dev, slots.slot] = slots.fixed("dos/densities")[1]
        mask[slots.dev, slots.slot] = slots.fixed("dos/mask")[1]
        return {"energies": np.broadcast_to(assembler.dos_grid, (D, B, L)).copy(), "densities": dens, "mask": mask}


MODALITY = Dos()
