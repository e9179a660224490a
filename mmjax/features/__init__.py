"""Public featuriser API (SPEC "Public Python API"): numpy in, numpy out.

    from mmjax.features import neighbor_graph, xrd_pattern, composition_features, symmetry_labels

Implementations live in ``mmjax.data.features``; this module only re-exports them so that the
stable names do not depend on the internal layout.
"""

from mmjax.data.features import (
    EmptyPatternWarning,
    charge_density_features,
    composition_features,
    crystal_system_of,
    dos_energy_grid,
    dos_features,
    element_features,
    gaussian_expansion,
    neighbor_graph,
    periodic_potentials,
    potnet_graph,
    repair_nans,
    resample_periodic,
    smear_pattern,
    symmetry_labels,
    two_theta_grid,
    xrd_pattern,
    xrd_peaks,
)
# Text (D5): robocrys is imported lazily inside describe_structure, so this import stays cheap.
from mmjax.data.features.text import describe_structure, describe_structures, normalize_text

__all__ = [
    "describe_structure",
    "describe_structures",
    "normalize_text",
    "EmptyPatternWarning",
    "charge_density_features",
    "composition_features",
    "crystal_system_of",
    "dos_energy_grid",
    "dos_features",
    "element_features",
    "gaussian_expansion",
    "neighbor_graph",
    "periodic_potentials",
    "potnet_graph",
    "repair_nans",
    "resample_periodic",
    "smear_pattern",
    "symmetry_labels",
    "two_theta_grid",
    "xrd_pattern",
    "xrd_peaks",
]
