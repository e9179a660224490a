"""A dense modality of its own, in one file (the registry test's modality): four numbers per
crystal from its structure — sites, volume per site (A^3), density (g/cm^3), mean atomic number."""

import numpy as np

from mmjax.data.modalities import DenseModality, register


def cell_features(material):
    """float32 [4] from ``material.structure``; None when the material has no structure."""
    st = material.structure
    if st is None:
        return None
    z = [site.specie.Z for site in st]
    return np.asarray([len(st), st.volume / len(st), float(st.density), float(np.mean(z))], np.float32)


CELL = register(DenseModality("cell", record_key="cell", featurize=cell_features))


def sparse_cell_features(material):
    """`cell_features` for materials whose id ends in an even digit; None (missing) for the others."""
    return None if material.id[-1] in "13579" else cell_features(material)


SPARSE_CELL = register(DenseModality("cell_sparse", record_key="cell_sparse", featurize=sparse_cell_features))
