"""Names, dtypes and shapes shared by the data layer, the models and the objectives.

This module is the contract between `mmjax.data` (which produces these arrays) and
`mmjax.systems` / `mmjax.train` (which consume them). `nn/` and `objectives/` never import it:
they take plain arrays.

Modalities (the keys of ``Batch["present"]``)::

    crystal         periodic neighbour graph (jraph.GraphsTuple)
    composition     element indices + fractions (CrabNet EDM)
    xrd             smeared powder pattern, float32 [L] (L = 4250 by default)
    text            frozen text embedding, float32 [D] (768 for BERT-base)
    dos             density of states on a fixed Fermi-shifted grid, float32 [L] + mask
    charge_density  voxel grid float32 [32, 32, 32]

Featurised record (one material, what featurisers return and the store writes; flat dict,
numpy arrays, no padding)::

    "crystal/atomic_numbers"   int32   [N]
    "crystal/senders"          int32   [E]      centre atom of each edge
    "crystal/receivers"        int32   [E]      neighbour atom (its periodic image)
    "crystal/distances"        float32 [E]      Angstrom; 0 for PotNet infinite edges
    "crystal/edge_kind"        int8    [E]      optional: 0 local edge, 1 PotNet infinite edge
    "crystal/potential"        float32 [E]      optional: PotNet summed potential (0 on local edges)
    "composition/atomic_numbers" int32 [M]      distinct elements, M <= max_elements
    "composition/fractions"    float32 [M]      sum to 1
    "xrd"                      float32 [L]      in [0, 100]
    "text_embedding"           float32 [D]
    "dos/densities"            float32 [L]      on the fixed grid "dos/energies" of the manifest
    "dos/mask"                 bool    [L]      True where the source covered that energy
    "charge_density"           float32 [32, 32, 32]
    "target/<name>"            float32 [] or [d]  NaN when the label is missing; [d] for a vector
                                                target (absent when the record has no label;
                                                NaN components are unlabelled components)
    "label/space_group"        int32   []       1..230
    "label/crystal_system"     int32   []       index into CRYSTAL_SYSTEMS

A key that is absent means the modality is missing for that material.

Batch (the pytree every system consumes; fixed shapes for a given config, B material slots)::

    "slot_valid"   bool [B]                     False for padding slots
    "present"      {modality: bool [B]}         modality exists for this slot (implies slot_valid)
    "crystal"      jraph.GraphsTuple with
                      nodes = {"atomic_numbers": int32 [N_pad]}
                      edges = {"distances": float32 [E_pad], and optionally
                               "edge_kind": int8 [E_pad], "potential": float32 [E_pad]}
                      senders, receivers int32 [E_pad]   (global node indices)
                      n_node, n_edge int32 [B + 1]       graph i <-> slot i; graph B is the
                                                         padding graph holding all pad nodes/edges
                      globals = None
    "composition"  {"atomic_numbers": int32 [B, M], "fractions": float32 [B, M], "mask": bool [B, M]}
    "xrd"          float32 [B, L]
    "text"         float32 [B, D]
    "dos"          {"energies": float32 [B, L], "densities": float32 [B, L], "mask": bool [B, L]}
    "charge_density" float32 [B, 32, 32, 32]
    "targets"      {name: float32 [B] (regression), float32 [B, d] (vector regression)
                    or int32 [B] (classification)}
    "target_mask"  {name: bool [B] or [B, d]}

Only the modalities a config asks for are in a Batch. Padding nodes/edges carry atomic number
0 and distance 0 and belong to graph B. For data parallelism every array gets a leading device
axis [n_devices, ...] (each device's micro-batch packed to the same budgets).
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("crystal", "composition", "xrd", "text", "dos", "charge_density")

CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)

# Default grids (see mmjax.data.features).
XRD_TWO_THETA_RANGE = (5.0, 90.0)
XRD_STEP = 0.02
XRD_LENGTH = 4250
DOS_LENGTH = 601
DENSITY_GRID = 32
GAUSSIAN_CENTERS = 41
MAX_ELEMENTS = 8

# Device batches: for data parallelism the pipeline emits every Batch leaf with a leading
# device axis [n_devices, B_per_device, ...] (graphs: each device's GraphsTuple packed to the
# same node/edge budgets, then stacked leaf-wise). On one device n_devices = 1. Systems
# flatten dense modalities to [n_devices * B_per_device, ...] and vmap graph encoders over the
# device axis; jit + NamedSharding over the mesh axis "data" partitions that leading axis.
DATA_AXIS = "data"


# Optional per-edge store columns of a crystal graph -> (Batch edge field, dtype) (PotNet's graphs).
OPTIONAL_EDGE_KEYS = {"crystal/edge_kind": ("edge_kind", np.int8), "crystal/potential": ("potential", np.float32)}
