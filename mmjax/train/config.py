"""The engine's part of every config: defaults for every key `mmjax.train` reads.

A system config starts from `base_config()` and fills ``config.system`` (read by the system
factory) and ``config.data`` (read by the data source); ``configs/*.py`` then set values like a
paper's hyperparameter table. `mmjax.main` locks the config, so a misspelt or mistyped
``--config.<key>=`` override fails naming the key.
"""

from __future__ import annotations

import ml_collections

from mmjax.train.optim import optim_config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Resume even if the checkpoint in --workdir was written under a different config.
    c.resume_mismatch = False
    c.system = ml_collections.ConfigDict(dict(name="toy"))
    c.data = ml_collections.ConfigDict(dict(source="synthetic", batch_per_device=4, length=16, eval_batches=2,
                                            delay_s=0.0, nan_at_batch=-1,
                                            prefetch=2))  # device batches prepared ahead by a thread (0 = off)
    c.train = ml_collections.ConfigDict(dict(
        steps=100,               # optimiser updates in the whole run
        epochs=0.0,              # > 0: steps = epochs x ceil(training materials / global batch), from the data
        log_every=10,            # fetch metrics / write logs every N steps (and at the end)
        eval_every=0,            # 0: evaluate only at the end (if the source has an eval split)
        compute_dtype="float32",  # or "bfloat16": read by the system factory
        progress=True,           # tqdm bar on process 0
        init_from="",            # finetune: workdir or checkpoint dir whose params seed matching leaves
        memory_check=True,       # stop before compiling a step that cannot fit (mmjax.train.memory)
        health="auto",           # representation health of system.embed at each eval (mmjax.train.health):
                                 # "on" | "off" | "auto" (= on in pretraining stages and label-free runs)
        health_batches=4,        # eval batches it reads
        max_loss_ratio=1e4,      # stop when |train loss| > this x max(|first logged loss|, 1); 0 = off
        compilation_cache_dir="auto",  # persistent XLA cache: "auto" (~/.cache/mmjax/xla), "" off, or a folder
    ))
    c.optim = optim_config("generic")
    c.checkpoint = ml_collections.ConfigDict(dict(
        every=0,                 # save every N steps (0: only at the end); always at the end
        keep=2,                  # latest K checkpoints kept
        best_metric="",          # e.g. "eval/loss": also keep the best step by this metric
        best_mode="min",
        async_save=True,
    ))
    c.mesh = ml_collections.ConfigDict(dict(param_sharding="replicate", fsdp_min_size=2**16))
    return c


# Config keys that may differ between a checkpoint and the resuming run without changing results.
# Config keys added after runs were written, and the value that reproduces what a run whose stored
# config lacks the key did (None: the key did not apply to that run). `config_differences` fills
# them in on the stored side, so such runs still resume and nothing else is waived.
ADDED_KEYS = {
    "system.head_source": lambda old: "latent" if old.get("system.name") == "xmopa" else None,
    "system.text_dim": lambda old: ((16 if old.get("system.small") else 150)
                                    if old.get("system.name") == "xmopa" else None),
    "system.packed_tokens": lambda old: 0.0 if old.get("system.name") == "crabnet" else None,
    "system.encoder.conv_form": lambda old: "factored" if old.get("system.name") == "cgcnn" else None,
}

RESUME_IGNORED_KEYS = ("resume_mismatch", "train.compilation_cache_dir", "train.memory_check", "train.max_loss_ratio", "train.health", "train.health_batches", "train.progress", "train.log_every", "data.delay_s", "data.prefetch",
                      "data.device_resident", "data.device_resident_max_mb")
