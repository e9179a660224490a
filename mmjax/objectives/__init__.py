"""Objectives: pure functions of jax arrays and boolean masks, each returning a 0-d loss.

Embeddings are L2-normalised inside the contrastive losses; ``present`` / ``mask`` arrays are
bool ``[B]``. Every loss jits with masks, accepts a traced temperature, and gives global results
when its batch is sharded with a ``NamedSharding`` under ``jax.jit``; explicit ``shard_map``
bodies live in ``mmjax.objectives.sharded``.
"""

from mmjax.objectives.barlow import barlow_twins, barlow_twins_3d, barlow_twins_nd, cross_correlation
from mmjax.objectives.contrastive import all_pairs_clip, anchored_clip, info_nce, pairwise_clip
from mmjax.objectives.mxm import masked_xrd_loss, sample_token_mask
from mmjax.objectives.predictive import cross_modal_prediction
from mmjax.objectives.sharded import (
    all_pairs_clip_sharded,
    anchored_clip_sharded,
    barlow_twins_3d_sharded,
    barlow_twins_sharded,
    info_nce_sharded,
    on_mesh,
    tensor_clip_sharded,
    vicreg_sharded,
)
from mmjax.objectives.supervised import (
    masked_cross_entropy,
    masked_mae,
    masked_mse,
    multitask_loss,
    sample_task,
)
from mmjax.objectives.temperature import LearnableTemperature, temperature_from_log
from mmjax.objectives.tensorclip import similarity_tensor, tensor_clip, tensor_clip_nd
from mmjax.objectives.vicreg import vicreg

# Registry: config name -> loss function (systems look objectives up here by name).
OBJECTIVES = {
    "info_nce": info_nce,
    "all_pairs_clip": all_pairs_clip,
    "anchored_clip": anchored_clip,
    "tensor_clip": tensor_clip,
    "barlow_twins": barlow_twins,
    "barlow_twins_3d": barlow_twins_3d,
    "vicreg": vicreg,
    "masked_xrd": masked_xrd_loss,
    "cross_modal_prediction": cross_modal_prediction,
    "multitask": multitask_loss,
}

__all__ = [
    "OBJECTIVES",
    "LearnableTemperature",
    "all_pairs_clip",
    "all_pairs_clip_sharded",
    "anchored_clip",
    "anchored_clip_sharded",
    "barlow_twins",
    "barlow_twins_3d",
    "barlow_twins_3d_sharded",
    "barlow_twins_nd",
    "barlow_twins_sharded",
    "cross_correlation",
    "cross_modal_prediction",
    "info_nce",
    "info_nce_sharded",
    "masked_cross_entropy",
    "masked_mae",
    "masked_mse",
    "masked_xrd_loss",
    "multitask_loss",
    "on_mesh",
    "pairwise_clip",
    "sample_task",
    "sample_token_mask",
    "similarity_tensor",
    "temperature_from_log",
    "tensor_clip",
    "tensor_clip_nd",
    "tensor_clip_sharded",
    "vicreg",
    "vicreg_sharded",
]
