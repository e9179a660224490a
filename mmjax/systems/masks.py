"""Slot, modality and target masks of a Batch, on the flattened ``[N]`` layout of the systems
(``N = n_dev * B_dev``; `mmjax.systems.base.flatten_device_axis`).

``slot_mask``: ``slot_valid``; ``modality_mask(batch, m)``: ``slot_valid & present[m]`` (a
modality missing from ``present`` counts as present on every valid slot); ``target_mask(batch,
name)``: ``slot_valid & target_mask[name]`` (``[N, d]`` for a vector target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.systems.base import flatten_device_axis


def num_slots(batch: Mapping[str, Any]) -> int:
    """N = n_dev * B_dev, the number of material slots of a Batch."""
    sv = batch["slot_valid"]
    return int(sv.shape[0] * sv.shape[1])


def slot_mask(batch: Mapping[str, Any]) -> jax.Array:
    """bool ``[N]``: real (non-padding) material slots."""
    return flatten_device_axis(jnp.asarray(batch["slot_valid"])).astype(bool)


def modality_mask(batch: Mapping[str, Any], modality: str) -> jax.Array:
    """bool ``[N]``: ``slot_valid & present[modality]`` (present everywhere if not listed)."""
    valid = slot_mask(batch)
    present = batch.get("present", {})
    if modality in present:
        valid = valid & flatten_device_axis(jnp.asarray(present[modality])).astype(bool)
    return valid


def modality_masks(batch: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, jax.Array]:
    """``{m: modality_mask(batch, m)}`` for each modality."""
    return {m: modality_mask(batch, m) for m in modalities}


def target_mask(batch: Mapping[str, Any], name: str) -> jax.Array:
    """bool ``[N]`` (``[N, d]`` for a vector target): ``slot_valid & target_mask[name]``."""
    if "target_mask" not in batch or name not in batch["target_mask"]:
        raise KeyError(f"target {name!r} is not in the batch (targets: {sorted(batch.get('targets', {}))}); "
                       "ask the data config for it")
    labelled = flatten_device_axis(jnp.asarray(batch["target_mask"][name])).astype(bool)
    valid = slot_mask(batch)
    return valid.reshape(valid.shape + (1,) * (labelled.ndim - 1)) & labelled
