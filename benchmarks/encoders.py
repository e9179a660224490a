"""Encoder benchmarks: paper parameter counts, forward+backward throughput, CPU anchors.

    python benchmarks/encoders.py            # quick mode (small sizes + cheap paper sizes + anchors)
    python benchmarks/encoders.py --full     # every encoder at paper size too (slow on CPU)
    python benchmarks/encoders.py --anchors  # only the CGCNN / CrabNet CPU anchors
    python benchmarks/encoders.py --anchors --devices 2 --no-ynn   # data parallel over 2 CPU
                                             # devices, XLA:CPU's YNNPACK fusions off

Throughput = samples / median step time over ``--repeats`` timed steps, compile excluded
(one warm-up call first). A "train" step is forward + backward + an optax update of a scalar
regression loss on the embedding mean. Numbers are noisy on a shared machine.

``--devices N`` splits the anchors' batch of 256 over N simulated XLA CPU devices (one
``shard_map`` data-parallel step, gradients averaged with ``pmean``: the same global batch and
update). ``--no-ynn`` turns off XLA:CPU's experimental YNNPACK fusions
(``--xla_cpu_experimental_ynn_fusion_type=``), which materialise edge-sized broadcasts in the
graph convolutions. Both are XLA flags, so they are applied before JAX is imported.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import os
import sys
import time
from functools import partial


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _early_xla_flags(argv) -> None:
    """Set XLA_FLAGS from --devices / --no-ynn before jax is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--no-ynn" in argv:
        flags += " --xla_cpu_experimental_ynn_fusion_type="
    for i, arg in enumerate(argv):
        n = arg.split("=", 1)[1] if arg.startswith("--devices=") else (argv[i + 1] if arg == "--devices" and i + 1 < len(argv) else None)
        if n is not None and int(n) > 1:
            flags += f" --xla_force_host_platform_device_count={int(n)}"
    os.environ["XLA_FLAGS"] = flags.strip()


if __name__ == "__main__":
    _early_xla_flags(sys.argv[1:])

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax.nn import PAPER_CONFIGS, make_encoder

# Reported sizes (papers, see shared/seeds): XxaCT-NN Sec. 3 "Model sizes"; X-MoPA ~111 M total
# with the frozen 110 M MatSciBERT, so its trainable part is ~1 M.
REPORTED = {
    "xxact_composition": 9.7e6,
    "xxact_xrd": 6.8e6,
    "xxact_fusion": 94.5e6,
    "xmopa_trainable (crystal+xrd+text)": 111e6 - 110e6,
}


def synthetic_graph(n_graphs: int, atoms: int = 5, neighbors: int = 12, seed: int = 0, potnet: bool = False):
    """``n_graphs`` graphs of ``atoms`` atoms x ``neighbors`` edges + one padding graph."""
    rng = np.random.default_rng(seed)
    n_real, e_real = n_graphs * atoms, n_graphs * atoms * neighbors
    z = np.zeros(n_real + 1, np.int32)
    z[:n_real] = rng.integers(1, 90, n_real)
    senders = np.full(e_real + 1, n_real, np.int32)
    receivers = np.full(e_real + 1, n_real, np.int32)
    senders[:e_real] = np.repeat(np.arange(n_real), neighbors)
    receivers[:e_real] = (np.arange(e_real) // (atoms * neighbors)) * atoms + rng.integers(0, atoms, e_real)
    d = np.zeros(e_real + 1, np.float32)
    d[:e_real] = rng.uniform(1.5, 8.0, e_real)
    edges = {"distances": d}
    if potnet:
        edges["edge_kind"] = np.zeros(e_real + 1, np.int8)
        edges["potential"] = np.zeros(e_real + 1, np.float32)
    return jraph.GraphsTuple(nodes={"atomic_numbers": z}, edges=edges, senders=senders, receivers=receivers,
                             n_node=np.array([atoms] * n_graphs + [1], np.int32),
                             n_edge=np.array([atoms * neighbors] * n_graphs + [1], np.int32), globals=None)


def synthetic_inputs(base: str, batch: int, small: bool):
    """Realistic-shape inputs for one encoder (XRD 4250 points at paper size, 5 elements, ...)."""
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.uniform(0, 1, s).astype(np.float32)  # noqa: E731
    if base in ("cgcnn", "matbind_gcn", "potnet"):
        return (synthetic_graph(batch, potnet=base == "potnet"),)
    if base == "xrd_transformer":
        return (100 * f32(batch, 32 if small else 4250),)
    if base in ("xrd_cnn", "xrd_fcn"):
        return (100 * f32(batch, 128 if small else 4250),)
    if base == "xrd_resnet":
        return (100 * f32(batch, 128),)
    if base == "crabnet":  # 5 elements, padded to the batch maximum (5) as CrabNet's loader does
        z = rng.integers(1, 90, (batch, 5)).astype(np.int32)
        return z, np.full((batch, 5), 0.2, np.float32), np.ones((batch, 5), bool)
    if base == "dos_transformer":
        length = 64 if small else 601
        e = np.tile(np.linspace(-10, 10, length, dtype=np.float32), (batch, 1))
        return e, f32(batch, length), np.ones((batch, length), bool)
    if base == "resnext3d":
        return (f32(batch, 8 if small else 32, 8 if small else 32, 8 if small else 32),)
    if base == "text_mlp":
        return (f32(batch, 768),)
    if base == "cross_attention_fusion":
        d = 16 if small else 768
        return f32(batch, 18, d), f32(batch, 9, d), np.ones((batch, 9), bool)
    raise KeyError(base)


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _embedding(out):
    return out[0] if isinstance(out, tuple) else out


CPU_TIMES: dict[str, float] = {}  # last median process CPU seconds per call, by label
FLOPS: dict[str, float] = {}  # XLA cost-analysis FLOPs of the last train step, by label


def step_flops(jitted, *args) -> float:
    """FLOPs of one call of a jitted function from XLA's cost analysis (nan if unavailable)."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        return float("nan")


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of one jitted n x n matmul (this machine's practical peak)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / time_fn(f, a, repeats=repeats, label="matmul") / 1e9


def time_fn(fn, *args, repeats: int, label: str = "") -> float:
    """Median wall seconds per call after one compile/warm-up call.

    Also stores the median process CPU time (``time.process_time``, all threads) per call in
    ``CPU_TIMES[label]``: on a shared machine wall time is inflated by other processes, while
    CPU time tracks the work done (it exceeds wall time when XLA runs ops on several threads).
    """
    jax.block_until_ready(fn(*args))
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_TIMES[label] = float(np.median(cpu))
    return float(np.median(times))


def train_and_infer_rate(model, inputs, batch: int, repeats: int, tx=None):
    """(train samples/s, inference samples/s) for a scalar MSE on the embedding mean."""
    params = jax.jit(model.init)(jax.random.key(0), *inputs)
    tx = tx or optax.adamw(1e-4)
    opt_state = tx.init(params)
    target = jnp.ones((batch,))

    stateful = "batch_stats" in params  # BatchNorm: training mode, running statistics carried along

    def loss_fn(p):
        if stateful:
            out, new_stats = model.apply(p, *inputs, deterministic=False, mutable=["batch_stats"])
        else:
            out, new_stats = model.apply(p, *inputs), {}
        emb = _embedding(out)
        return jnp.mean((emb.reshape(batch, -1).mean(-1) - target) ** 2), new_stats

    @partial(jax.jit, donate_argnums=(0, 1))  # params/opt state updated in place, as in training
    def step(p, o):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        return dict(optax.apply_updates(p, updates), **new_stats), o, loss

    infer = jax.jit(lambda p: model.apply(p, *inputs))
    state = {"p": params, "o": opt_state}

    def run_step():
        state["p"], state["o"], loss = step(state["p"], state["o"])
        return loss

    t_train = time_fn(run_step, repeats=repeats, label="train")
    FLOPS["train"] = step_flops(step, state["p"], state["o"])
    t_infer = time_fn(infer, state["p"], repeats=repeats, label="infer")
    return batch / t_train, batch / t_infer


def data_parallel_train_rate(model, per_device_inputs, batch: int, repeats: int, tx=None) -> float:
    """Train samples/s of one data-parallel step over ``len(per_device_inputs)`` devices.

    ``per_device_inputs``: one input tuple per device (same shapes), each with ``batch / n``
    samples; the loss is the mean over the global batch (``pmean`` of per-device means, equal
    sizes) and the gradients are averaged, so the update equals the single-device step."""
    n = len(per_device_inputs)
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *per_device_inputs)
    stacked = jax.device_put(stacked, NamedSharding(mesh, P("data")))
    params = jax.jit(model.init)(jax.random.key(0), *per_device_inputs[0])
    tx = tx or optax.adamw(1e-4)
    opt_state = tx.init(params)
    local_batch = batch // n

    def local_step(p, o, inputs):
        inputs = jax.tree.map(lambda x: x[0], inputs)

        def loss_fn(p):
            emb = _embedding(model.apply(p, *inputs))
            return jnp.mean((emb.reshape(local_batch, -1).mean(-1) - 1.0) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        grads, loss = jax.lax.pmean((grads, loss), "data")
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    step = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(), P("data")),
                                 out_specs=(P(), P(), P()), check_vma=False), donate_argnums=(0, 1))
    state = {"p": params, "o": opt_state}

    def run_step():
        state["p"], state["o"], loss = step(state["p"], state["o"], stacked)
        return loss

    return batch / time_fn(run_step, repeats=repeats, label="train")


def param_table():
    print("\n## Parameter counts of paper-size configs")
    print(f"{'config':36s} {'ours (M)':>10s} {'paper (M)':>10s}")
    counts = {}
    for key, (base, _) in PAPER_CONFIGS.items():
        model = make_encoder(key)
        shapes = jax.eval_shape(model.init, jax.random.key(0), *synthetic_inputs(base, 2, small=False))
        counts[key] = count_params(shapes)
    counts["xmopa_trainable (crystal+xrd+text)"] = counts["xmopa_crystal"] + counts["xmopa_xrd"] + counts["xmopa_text"]
    for key, n in counts.items():
        rep = REPORTED.get(key)
        print(f"{key:36s} {n / 1e6:10.3f} {'' if rep is None else f'{rep / 1e6:10.1f}':>10s}")
    return counts


def throughput_table(full: bool, repeats: int, counts):
    print("\n## Forward+backward throughput (samples/s, CPU, median, compile excluded)")
    print(f"{'encoder':28s} {'size':6s} {'batch':>5s} {'train/s':>10s} {'infer/s':>10s}")
    for key, (base, _) in PAPER_CONFIGS.items():
        for small in (True, False):
            if not small and not full and counts[key] > 10e6:
                continue  # quick mode: paper sizes only for cheap models
            batch = 32 if small else 8
            model = make_encoder(key, small=small)
            train, infer = train_and_infer_rate(model, synthetic_inputs(base, batch, small), batch, repeats)
            print(f"{key:28s} {'small' if small else 'paper':6s} {batch:5d} {train:10.1f} {infer:10.1f}", flush=True)


# What the original PyTorch code reaches, read from the last committed measurement of the training
# command against it (benchmarks/train_command.py --original, issue #15), with its date and hardware:
# machines differ between sessions (the 2026-12-02 AVX2 Xeon ran the original CGCNN main.py at
# ~1,735 structures/s, the 2026-12-07 AVX-512 Xeon at 500-750), so a constant would mislead.
ORIGINAL_RESULTS = {
    "cgcnn": ("cgcnn_vs_original.json", "txie-93/cgcnn main.py epoch", "structures/s"),
    "crabnet": ("crabnet_vs_original_mp_bulk_modulus.json", "CrabNet Model.train (MP bulk modulus)", "samples/s"),
}


def original_reference(name: str, results: pathlib.Path = ROOT / "benchmarks" / "results" / "train_command") -> str:
    """One line: the original code's median rate from ``results/<file>`` (date, hardware), or why not."""
    fname, what, unit = ORIGINAL_RESULTS[name]
    path = results / fname
    if not path.is_file():
        return f"original {what}: not measured ({path.name} missing; benchmarks/train_command.py --original {name})"
    res = json.loads(path.read_text())
    orig = res.get("original", {})
    rate = orig.get("median_samples_per_s")
    if rate is None:
        return f"original {what}: {path.name} has no 'original' entry"
    hw = res.get("hardware", {})
    cpu = hw.get("cpu", "?") if isinstance(hw, dict) else str(hw)
    if isinstance(hw, dict) and hw.get("cpu_isa"):
        cpu += f" ({hw['cpu_isa']})"
    return f"original {what} ~{rate:,.0f} {unit} on {cpu}, {res.get('date', '?')[:10]} (results/train_command/{fname})"


def anchors(repeats: int, devices: int = 1):
    print(f"\n## CPU anchors (batch 256, {devices} XLA CPU device(s), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
    cgcnn = make_encoder("cgcnn")  # atom_fea 64, 3 conv, h 128
    crab = make_encoder("crabnet")  # d_model 512, 3 layers, 4 heads
    sgd = optax.sgd(0.01, momentum=0.9)
    if devices > 1:
        if 256 % devices:
            raise SystemExit(f"--devices must divide the batch of 256, got {devices}")
        graphs = [(synthetic_graph(256 // devices, seed=i),) for i in range(devices)]
        train = data_parallel_train_rate(cgcnn, graphs, 256, repeats, tx=sgd)
        infer = float("nan")  # inference rows: single device only
        CPU_TIMES.pop("infer", None)
    else:
        train, infer = train_and_infer_rate(cgcnn, (synthetic_graph(256),), 256, repeats, tx=sgd)
    print(f"CGCNN  5-atom graphs, 12 nbrs : train {train:8.0f}/s  infer {infer:8.0f}/s "
          f"(LayerNorm; {original_reference('cgcnn')})  {_cpu_note()}", flush=True)
    if devices == 1:  # the paper model: BatchNorm as the reference (benchmarks/pytorch_anchors.py's ConvLayer)
        train, infer = train_and_infer_rate(make_encoder("cgcnn", norm="batch"), (synthetic_graph(256),), 256,
                                            repeats, tx=sgd)
        print(f"CGCNN  BatchNorm (paper model): train {train:8.0f}/s  infer {infer:8.0f}/s  {_cpu_note()}",
              flush=True)
    comp = synthetic_inputs("crabnet", 256, small=False)
    FLOPS.pop("train", None)
    if devices > 1:
        shards = [tuple(x[i::devices] for x in comp) for i in range(devices)]
        train = data_parallel_train_rate(crab, shards, 256, repeats)
    else:
        train, infer = train_and_infer_rate(crab, comp, 256, repeats)
    print(f"CrabNet 5 elements            : train {train:8.0f}/s  infer {infer:8.0f}/s "
          f"({original_reference('crabnet')})  {_cpu_note()}", flush=True)
    if devices == 1:  # roofline: is the step compute bound on this CPU?
        flops = FLOPS.get("train", float("nan"))
        peak = matmul_peak()
        print(f"CrabNet train step: {flops / 1e9:.1f} GFLOP (XLA cost analysis) -> {flops * train / 256 / 1e9:.0f} GFLOP/s "
              f"achieved; float32 2048^2 matmul on this machine: {peak:.0f} GFLOP/s; 800 samples/s would need "
              f"{flops * 800 / 256 / 1e9:.0f} GFLOP/s", flush=True)


def _cpu_note() -> str:
    """Process CPU seconds per train/infer step of the last measurement (all threads)."""
    return f"[cpu s/step: train {CPU_TIMES['train']:.3f}, infer {CPU_TIMES.get('infer', float('nan')):.3f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="all encoders at paper size")
    parser.add_argument("--anchors", action="store_true", help="only the CGCNN/CrabNet anchors")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1, help="data-parallel XLA CPU devices for the anchors")
    parser.add_argument("--no-ynn", action="store_true", help="turn off XLA:CPU YNNPACK fusions")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x {jax.device_count()}")
    if not args.anchors:
        counts = param_table()
        throughput_table(args.full, args.repeats, counts)
    anchors(args.repeats, args.devices)


if __name__ == "__main__":
    main()
