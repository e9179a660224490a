"""Pure-numpy featurisers: ``Structure`` / arrays in, dicts of numpy arrays out (no JAX).

Modules: ``graph`` (neighbour graphs, PotNet graphs, Gaussian expansion), ``elements`` (element
feature tables), ``xrd`` (powder patterns), ``composition`` (CrabNet EDM), ``symmetry`` (space
group / crystal system), ``dos`` (density of states on a fixed grid), ``density`` (charge density
voxels). ``text`` (robocrystallographer descriptions) is imported on its own because robocrys is
slow to import. The public names are re-exported by ``mmjax.features``.
"""

from mmjax.data.features.composition import composition_features
from mmjax.data.features.density import charge_density_features, resample_periodic
from mmjax.data.features.dos import dos_energy_grid, dos_features, repair_nans
from mmjax.data.features.elements import element_features
from mmjax.data.features.graph import gaussian_expansion, neighbor_graph, periodic_potentials, potnet_graph
from mmjax.data.features.symmetry import crystal_system_of, symmetry_labels
from mmjax.data.features.xrd import EmptyPatternWarning, smear_pattern, two_theta_grid, xrd_pattern, xrd_peaks

__all__ = [
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
