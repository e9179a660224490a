"""The papers' optimisers and schedules (CrabNet's Lamb + Lookahead + CyclicLR, CGCNN's SGD +
MultiStepLR) against plain-NumPy transcriptions of the reference PyTorch code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.train.optim import build_optimizer, build_schedule, cyclic_schedule, optim_config


def torch_cyclic(it, base, peak, half):
    """torch.optim.lr_scheduler.CyclicLR(mode="triangular") at scheduler step ``it``."""
    cycle = math.floor(1 + it / (2 * half))
    x = abs(it / half - 2 * cycle + 1)
    return base + (peak - base) * max(0.0, 1 - x)


@pytest.mark.parametrize("it", [0, 1, 5, 9, 10, 11, 19, 20, 21, 37])
def test_cyclic_matches_torch_formula(it):
    s = cyclic_schedule(1e-4, 6e-3, 10)
    assert float(s(it)) == pytest.approx(torch_cyclic(it, 1e-4, 6e-3, 10), rel=1e-5)
    assert float(s(0)) == pytest.approx(1e-4) and float(s(10)) == pytest.approx(6e-3) and float(s(20)) == pytest.approx(1e-4)


def test_crabnet_preset_cycles_over_epochs_and_step_schedule():
    cfg = optim_config("crabnet", steps_per_epoch=7)
    s = build_schedule(cfg, 280)
    assert float(s(7)) == pytest.approx(6e-3) and float(s(14)) == pytest.approx(1e-4)
    cg = optim_config("cgcnn", steps_per_epoch=3)
    s = build_schedule(cg, 1000)
    assert float(s(299)) == pytest.approx(0.01) and float(s(300)) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_schedule(optim_config("crabnet"), 100)
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"config.optim.peak_lr=.*: learning rates must be finite and >= 0"):
            build_optimizer(optim_config("generic", peak_lr=bad), 10)
    with pytest.raises(ValueError, match=r"config.optim.weight_decay=nan: must be finite and >= 0"):
        build_optimizer(optim_config("generic", weight_decay=float("nan")), 10)


def reference_crabnet(params, grads_seq, lrs, k=6, alpha=0.5, b1=0.9, b2=0.999, eps=1e-6):
    """NumPy transcription of CrabNet's utils.Lamb.step inside utils.Lookahead.step."""
    p = {n: v.astype(np.float64).copy() for n, v in params.items()}
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v2 = {n: np.zeros_like(v) for n, v in p.items()}
    slow = {}
    for step, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        for n in p:
            m[n] = b1 * m[n] + (1 - b1) * g[n]
            v2[n] = b2 * v2[n] + (1 - b2) * g[n] * g[n]
            a = m[n] / (np.sqrt(v2[n]) + eps)
            wn = min(np.sqrt(np.sum(p[n] ** 2)), 10.0)
            an = np.sqrt(np.sum(a ** 2))
            r = 1.0 if (wn == 0 or an == 0) else wn / an
            p[n] = p[n] - lr * r * a
        if step % k == 0:
            for n in p:
                if n not in slow:
                    slow[n] = p[n].copy()
                slow[n] = slow[n] + alpha * (p[n] - slow[n])
                p[n] = slow[n].copy()
    return p


def test_crabnet_lamb_lookahead_matches_reference():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)).astype(np.float32) * 5.0,  # norm > 10: the trust clamp matters
              "b": np.zeros(3, np.float32),                             # zero norm: trust ratio 1
              "s": np.float32(1.0) * np.ones((), np.float32)}
    grads_seq = [{n: rng.normal(size=np.shape(v)).astype(np.float32) for n, v in params.items()} for _ in range(14)]
    cfg = optim_config("crabnet", steps_per_epoch=3)
    tx, sched = build_optimizer(cfg, 14)
    lrs = [float(sched(i)) for i in range(14)]
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    for g in grads_seq:
        u, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, u)
    ref = reference_crabnet(params, [{n: x.astype(np.float64) for n, x in g.items()} for g in grads_seq], lrs)
    for n in params:
        np.testing.assert_allclose(np.asarray(p[n]), ref[n], rtol=2e-5, atol=2e-6)
    # the first sync (step 6) leaves the weights unchanged; at step 12 they move half-way back
    assert int(state.step) == 14 and bool(state.has_slow)


def test_lookahead_first_sync_is_identity():
    """k = 2, plain SGD inner steps: after step 2 weights = fast weights; after step 4 they are
    the mean of the step-2 and step-4 fast weights."""
    cfg = optim_config("generic", name="sgd", peak_lr=1.0, b1=0.0, lookahead_k=2, lookahead_alpha=0.5)
    tx, _ = build_optimizer(cfg, 10)
    p = {"x": jnp.zeros(())}
    st = tx.init(p)
    out = []
    for g in (1.0, 1.0, 1.0, 1.0):
        u, st = tx.update({"x": jnp.asarray(g)}, st, p)
        p = optax.apply_updates(p, u)
        out.append(float(p["x"]))
    # fast: -1, -2 (sync 1: slow=-2, keep -2), -3, -4 (sync 2: slow = -2 + 0.5(-4 + 2) = -3)
    assert out == pytest.approx([-1.0, -2.0, -3.0, -3.0])


def test_sgd_momentum_matches_torch():
    """torch.optim.SGD(momentum=0.9, weight_decay=wd): buf = 0.9 buf + (g + wd p); p -= lr buf."""
    cfg = optim_config("generic", name="sgd", peak_lr=0.1, b1=0.9, weight_decay=0.01)
    tx, _ = build_optimizer(cfg, 10)
    p = {"x": jnp.asarray([1.0, -2.0])}
    st = tx.init(p)
    ref_p, buf = np.array([1.0, -2.0]), np.zeros(2)
    for g in ([0.5, 0.1], [-0.2, 0.3], [0.0, 1.0]):
        u, st = tx.update({"x": jnp.asarray(g)}, st, p)
        p = optax.apply_updates(p, u)
        buf = 0.9 * buf + (np.asarray(g) + 0.01 * ref_p)
        ref_p = ref_p - 0.1 * buf
    np.testing.assert_allclose(np.asarray(p["x"]), ref_p, rtol=1e-6)


def test_lamb_and_unknown_optimizer():
    tx, _ = build_optimizer(optim_config("generic", name="lamb"), 10)
    p = {"x": jnp.ones(3)}
    u, _ = tx.update({"x": jnp.ones(3)}, tx.init(p), p)
    assert np.all(np.isfinite(np.asarray(u["x"])))
    with pytest.raises(ValueError, match="expected one of"):
        build_optimizer(optim_config("generic", name="adagrad"), 10)


def test_crabnet_lamb_packed_qkv_trust_ratio_matches_the_packed_reference():
    """With ``lamb_trust_groups="torch_packed_qkv"`` (the crabnet preset) the q/k/v kernels of an
    attention module share one trust ratio and their biases another: the same result as running
    CrabNet's Lamb on PyTorch's packed ``in_proj_weight`` / ``in_proj_bias`` and cutting it back.
    The output projection and other arrays keep their own. Per-tensor mode differs (a real change)."""
    rng = np.random.default_rng(3)
    att = {n: {"kernel": (rng.normal(size=(4, 2, 2)) * s).astype(np.float32), "bias": rng.normal(size=(2, 2)).astype(np.float32)}
           for n, s in (("query", 3.0), ("key", 0.5), ("value", 1.0))}
    att["out"] = {"kernel": rng.normal(size=(2, 2, 4)).astype(np.float32)}
    params = {"block": {"attention": att}, "w": (rng.normal(size=(3, 3)) * 6).astype(np.float32)}
    grads_seq = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params) for _ in range(8)]
    cfg = optim_config("crabnet", steps_per_epoch=2)
    assert cfg.lamb_trust_groups == "torch_packed_qkv"
    tx, sched = build_optimizer(cfg, 8)
    lrs = [float(sched(i)) for i in range(8)]
    p, state = jax.tree.map(jnp.asarray, params), None
    state = tx.init(p)
    for g in grads_seq:
        u, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, u)

    qkv = ("query", "key", "value")

    def pack(tree):
        a = tree["block"]["attention"]
        return {"in_w": np.concatenate([a[n]["kernel"].ravel() for n in qkv]),
                "in_b": np.concatenate([a[n]["bias"].ravel() for n in qkv]),
                "out": a["out"]["kernel"], "w": tree["w"]}

    ref = reference_crabnet(pack(params), [{n: x.astype(np.float64) for n, x in pack(g).items()} for g in grads_seq], lrs)
    a = p["block"]["attention"]
    np.testing.assert_allclose(np.concatenate([np.asarray(a[n]["kernel"]).ravel() for n in qkv]), ref["in_w"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.concatenate([np.asarray(a[n]["bias"]).ravel() for n in qkv]), ref["in_b"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(a["out"]["kernel"]), ref["out"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(p["w"]), ref["w"], rtol=2e-5, atol=2e-6)

    tx_t, _ = build_optimizer(optim_config("crabnet", steps_per_epoch=2, lamb_trust_groups="tensor"), 8)
    pt = jax.tree.map(jnp.asarray, params)
    st = tx_t.init(pt)
    for g in grads_seq:
        u, st = tx_t.update(jax.tree.map(jnp.asarray, g), st, pt)
        pt = optax.apply_updates(pt, u)
    assert not np.allclose(np.asarray(pt["block"]["attention"]["query"]["kernel"]), np.asarray(a["query"]["kernel"]))
    np.testing.assert_allclose(np.asarray(pt["w"]), np.asarray(p["w"]), rtol=1e-6)
    with pytest.raises(ValueError, match="lamb_trust_groups='packed'"):
        build_optimizer(optim_config("crabnet", steps_per_epoch=2, lamb_trust_groups="packed"), 8)
