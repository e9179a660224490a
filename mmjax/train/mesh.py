"""Multi-host start-up, plus the mesh and sharding helpers of `mmjax.data.sharding` (re-exported).

One mesh axis, ``"data"`` (`mmjax.data.schema.DATA_AXIS`), over every device of every process
(Auto axis type, so GSPMD inserts collectives for batch-sharded matmuls). Batches carry a
leading device axis ``[n_dev, B_dev, ...]`` sharded ``P("data")``. Parameters and optimiser
state are replicated, or, with ``config.mesh.param_sharding = "fsdp"``, every array with at
least ``fsdp_min_size`` elements is sharded over ``"data"`` along its largest axis divisible by
the device count (ZeRO-3 / FSDP-like; GSPMD gathers it where used).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from typing import Any, Mapping

import jax

from mmjax.data.sharding import (batch_sharding, host_to_global, leaf_sharding, make_mesh,  # noqa: F401 (re-exported)
                            replicated, tree_shardings)

__all__ = ["batch_sharding", "distributed_settings", "first_slurm_host", "host_to_global", "initialize_distributed",
           "leaf_sharding", "make_mesh", "replicated", "tree_shardings"]

PyTree = Any
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- multi-host start-up


def first_slurm_host(nodelist: str) -> str:
    """First host name of a SLURM node list (``"gpu[003-005,9]" -> "gpu003"``).

    Uses ``scontrol show hostnames`` when available, else parses the common bracket syntax.
    """
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"^([^\[,]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def distributed_settings(env: Mapping[str, str] | None = None) -> dict | None:
    """Arguments for `jax.distributed.initialize`, read from the environment, or None (single process).

    Precedence:
      1. ``JAX_COORDINATOR_ADDRESS`` (host:port), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``
         (what `launch/local_multiprocess.sh` and custom launchers set);
      2. SLURM with more than one task: coordinator = first host of ``SLURM_JOB_NODELIST`` on
         ``MMJAX_COORDINATOR_PORT`` (default 12355), ``SLURM_NTASKS`` processes, id ``SLURM_PROCID``;
      3. ``MMJAX_AUTO_DISTRIBUTED=1`` (TPU pods, other clusters): `jax.distributed.initialize()`
         detects everything itself (returned as an empty dict).
    """
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS"):
        addr = env["JAX_COORDINATOR_ADDRESS"]
        if ":" not in addr:
            addr = f"{addr}:{env.get('JAX_COORDINATOR_PORT', '12355')}"
        for key in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            if key not in env:
                raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {key} is not")
        out = dict(coordinator_address=addr, num_processes=int(env["JAX_NUM_PROCESSES"]),
                   process_id=int(env["JAX_PROCESS_ID"]))
        if env.get("JAX_LOCAL_DEVICE_IDS"):
            out["local_device_ids"] = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
        return out
    if int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_JOB_NODELIST"):
        host = first_slurm_host(env["SLURM_JOB_NODELIST"])
        return dict(coordinator_address=f"{host}:{env.get('MMJAX_COORDINATOR_PORT', '12355')}",
                    num_processes=int(env["SLURM_NTASKS"]), process_id=int(env["SLURM_PROCID"]))
    if env.get("MMJAX_AUTO_DISTRIBUTED") == "1":
        return {}
    return None


_initialized = False


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Start JAX's multi-process runtime if the environment asks for it (call before using devices).

    Returns True when `jax.distributed.initialize` was called. CPU processes exchange collectives
    through gloo (``jax_cpu_collectives_implementation``).
    """
    global _initialized
    settings = distributed_settings(env)
    if settings is None or _initialized:
        return False
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log.info("jax.distributed.initialize(%s)", settings)
    jax.distributed.initialize(**settings)
    _initialized = True
    return True
