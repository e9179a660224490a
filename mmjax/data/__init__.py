"""Data layer: sources -> Material -> featurisers -> store -> pipeline -> Batch."""

from mmjax.data.material import DOS, Material, RecordError
from mmjax.data.splits import matbench_fold_of_rows, matbench_folds, random_split, validation_split

__all__ = [
    "DOS",
    "Material",
    "RecordError",
    "matbench_fold_of_rows",
    "matbench_folds",
    "random_split",
    "validation_split",
]
