"""Tiny toy-system config for engine tests: ``--config=tests/train/toy_config.py``."""

from mmjax.systems.toy import toy_system_config
from mmjax.train.config import base_config


def get_config():
    c = base_config()
    c.system = toy_system_config()
    c.data.batch_per_device = 2
    c.data.length = 8
    c.train.steps = 40
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.progress = False
    c.optim.schedule = "cosine"
    c.optim.peak_lr = 1e-2
    c.optim.warmup_steps = 5
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.checkpoint.every = 10
    c.checkpoint.keep = 2
    c.checkpoint.best_metric = "eval/loss"
    return c
