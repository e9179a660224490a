"""Public featuriser API (SPEC "Public Python API"): numpy in, numpy out.

    from mmjax.features import neighbor_graph, xrd_pattern, composition_features, symmetry_labels

Implementations live in ``mmjax.data.features``; this module only re-exports them (plus the text
featurisers, whose robocrys import happens lazily inside ``describe_structure``) so that the
stable names do not depend on the internal layout.
"""

from mmjax.data.features import *  # noqa: F401,F403  (the names listed in its __all__)
from mmjax.data.features import __all__ as _numeric
from mmjax.data.features.text import describe_structure, normalize_text
from mmjax.data.features.text_cache import describe_structures

__all__ = [*_numeric, "describe_structure", "describe_structures", "normalize_text"]
