"""--mode=featurize as a cluster job array: K shard tasks + a merge give the unsharded dataset."""

import numpy as np

from mmjax.data.store import Dataset
from mmjax.data import cache as data_cache
from mmjax.train.modes import MODES
from test_modes import tiny_config


def test_sharded_featurize_then_merge_equals_unsharded(tmp_path):
    config = tiny_config(n=9)
    config.data.modalities = ("composition", "xrd")
    config.data.features.xrd_step = 0.5  # 170 points: fast
    whole = MODES["featurize"](config, str(tmp_path / "whole"))

    sharded = str(tmp_path / "sharded")
    config.data.num_shards = 3
    outs = []
    for k in range(3):
        config.data.shard_index = k
        outs.append(MODES["featurize"](config, sharded))
    assert [o["written"] for o in outs] == [3, 3, 3]
    folder = data_cache.dataset_dir(config, sharded)
    config.data.shard_index = -1
    merged = MODES["featurize"](config, sharded)
    assert merged["path"] == folder and merged["written"] == whole["written"] == 9

    a, b = Dataset.open(whole["path"]), Dataset.open(folder)
    assert list(a.ids) == list(b.ids)
    for i in range(len(a)):
        ra, rb = a[i], b[i]
        assert sorted(ra) == sorted(rb)
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)
    # A later run (unsharded config) finds the merged dataset in the usual place.
    config.data.num_shards = 1
    config.data.shard_index = 0
    assert data_cache.prepare_dataset(config, sharded).root == b.root
