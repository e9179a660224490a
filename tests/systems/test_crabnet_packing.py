"""Token packing (mmjax.nn.packing): the packed CrabNet encoder, head and system give the padded
ones' values and gradients; an over-budget batch runs padded; 8 devices equal 1; the auto budget
and the config key's range check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from xxact_helpers import first_batch, make_dataset, tiny_crabnet_config

from mmjax.nn import CrabNet
from mmjax.nn.heads import CrabNetHead
from mmjax.nn.packing import auto_fraction, pack, pack_index, packed_or_padded, token_budget, unpack
from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.loop import build_engine
from mmjax.train.state import init_state
from mmjax.train.step import make_train_step


def random_compositions(b=12, s=6, seed=0):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, s + 1, b)
    n[2] = 0  # an empty row (a padding slot of the batch)
    mask = np.arange(s)[None] < n[:, None]
    z = np.where(mask, rng.integers(1, 90, (b, s)), 0).astype(np.int32)
    f = np.where(mask, rng.random((b, s)), 0.0)
    f = (f / np.maximum(f.sum(1, keepdims=True), 1e-9)).astype(np.float32)
    return z, f, mask


def test_pack_index_and_round_trip_by_hand():
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]], bool)
    index, fits = pack_index(jnp.asarray(mask), 6)
    np.testing.assert_array_equal(np.asarray(index), [0, 2, 6, 7, 9, 9])  # flat b*3+s, then 9 = past the end
    assert bool(fits)
    _, fits = pack_index(jnp.asarray(mask), 3)
    assert not bool(fits)  # 4 real tokens, budget 3
    x = np.arange(2 * 9, dtype=np.float32).reshape(3, 3, 2) + 1
    packed = np.asarray(pack(jnp.asarray(x), index))
    np.testing.assert_array_equal(packed[:4], x[mask])
    np.testing.assert_array_equal(packed[4:], 0.0)
    np.testing.assert_array_equal(np.asarray(unpack(jnp.asarray(packed), index, 3, 3)), np.where(mask[..., None], x, 0))
    assert token_budget(3, 3, 0.5) == 8 and token_budget(3, 3, 1.0) == 9 and token_budget(100, 8, 0.4) == 320
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        token_budget(3, 3, 1.5)


def test_packed_crabnet_encoder_and_head_equal_padded_values_and_gradients():
    z, f, mask = random_compositions()
    enc = CrabNet(d_model=16, num_layers=2, num_heads=4, mlp_dim=32, element_dim=8, resolution=100, torch_init=True,
                  out_dim=12)
    head = CrabNetHead(("a", "b"), (16, 8))
    pe = enc.init(jax.random.PRNGKey(0), z, f, mask)
    _, tok, _ = enc.apply(pe, z, f, mask, return_tokens=True)
    ph = head.init(jax.random.PRNGKey(1), tok, mask)
    for extra in (0, 5):  # budget = exactly the real tokens, and with 5 unused (fill) entries
        check_packed_equals_padded(enc, head, pe, ph, z, f, mask, int(mask.sum()) + extra)


def check_packed_equals_padded(enc, head, pe, ph, z, f, mask, budget):
    index, fits = pack_index(jnp.asarray(mask), budget)
    assert bool(fits)

    def loss(params, token_index):
        pooled, tokens, m = enc.apply(params[0], z, f, mask, return_tokens=True, token_index=token_index)
        out = head.apply(params[1], tokens, m, token_index)
        return jnp.sum(out["a"] ** 2) + jnp.sum(jnp.sin(out["b/log_sigma"])) + jnp.sum(pooled ** 2), (pooled, out)

    (l0, (pooled0, out0)), g0 = jax.value_and_grad(loss, has_aux=True)((pe, ph), None)
    (l1, (pooled1, out1)), g1 = jax.value_and_grad(loss, has_aux=True)((pe, ph), index)
    np.testing.assert_allclose(np.asarray(pooled1), np.asarray(pooled0), rtol=1e-5, atol=1e-6)
    for k in out0:
        np.testing.assert_allclose(np.asarray(out1[k]), np.asarray(out0[k]), rtol=1e-5, atol=1e-6)
    assert float(l1) == pytest.approx(float(l0), rel=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(pooled0[2])).max() == 0.0  # the empty row pools to zero in both
    with pytest.raises(ValueError, match="use_cls_token"):
        CrabNet(d_model=16, num_layers=1, num_heads=4, mlp_dim=32, use_cls_token=True).init(
            jax.random.PRNGKey(0), z, f, mask, token_index=index)


def test_packed_or_padded_takes_the_padded_branch_over_budget():
    def branch(mask, frac):  # 1.0 = packed, 0.0 = padded
        return float(jax.jit(lambda m: packed_or_padded(m, frac, lambda idx: jnp.float32(1.0),
                                                         lambda: jnp.float32(0.0)))(jnp.asarray(mask)))

    mask = np.tile(np.eye(4, dtype=bool), (4, 1))  # [16, 4]: 16 real tokens in 64 slots
    assert branch(mask, 0.25) == 1.0  # budget 16 holds them
    over = mask.copy()
    over[0, 1] = True  # 17 real tokens, budget 16
    assert branch(over, 0.25) == 0.0
    assert branch(mask, 0.0) == 0.0  # off
    assert branch(mask, 1.0) == 0.0  # a budget of every slot saves nothing: padded


def auto_counts():
    return np.array([1, 2, 2, 3, 3, 3, 4, 6])


def test_auto_fraction_by_hand():
    c = auto_counts()
    mean, std = c.mean(), c.std()
    assert auto_fraction(c, 8, 100) == pytest.approx((mean + 5 * std / 10) / 8)
    assert auto_fraction(c, 4, 100) == 0.0  # would need > 90 % of the slots
    assert auto_fraction([], 8, 100) == 0.0


def tiny_packed_config(packed):
    c = tiny_crabnet_config(num_layers=2, fraction_noise=0.02)
    c.system.packed_tokens = packed
    return c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("packing_ds"), n=16)


def test_packed_system_loss_gradients_and_predictions_equal_padded(dataset):
    batch = first_batch(dataset, 16, 1, ("composition",), ("y",))
    mask = np.asarray(batch["composition"]["mask"]).reshape(16, -1)
    frac = (mask.sum() + 2) / mask.size  # fits, below every slot
    assert frac < 0.9
    padded, packed = build_system(tiny_packed_config(0.0)), build_system(tiny_packed_config(float(frac)))
    params = padded.init(jax.random.PRNGKey(0), batch)
    rng = jax.random.PRNGKey(3)  # the fraction jitter draws [N, M] in both: the same noise
    (l0, _), g0 = jax.value_and_grad(padded.loss, has_aux=True)(params, batch, rng, True)
    (l1, _), g1 = jax.value_and_grad(packed.loss, has_aux=True)(params, batch, rng, True)
    assert float(l1) == pytest.approx(float(l0), rel=1e-5)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    p0, p1 = padded.predict(params, batch), packed.predict(params, batch)
    for k in p0:
        np.testing.assert_allclose(np.asarray(p1[k]), np.asarray(p0[k]), rtol=1e-5, atol=1e-6)
    # a budget below the batch's real tokens runs padded: the same values again
    small = build_system(tiny_packed_config(0.05))
    np.testing.assert_allclose(np.asarray(small.predict(params, batch)["y"]), np.asarray(p0["y"]), rtol=1e-6)


def test_packed_config_key_out_of_range_is_one_error_naming_it():
    with pytest.raises(ValueError, match=r"config\.system\.packed_tokens=1\.5"):
        build_system(tiny_packed_config(1.5))


def run_steps(config, mesh, batch, n=2):
    system = build_system(config)
    eng = build_engine(system, config, batch, mesh)
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    losses = []
    for _ in range(n):
        state, metrics = step(state, mesh_lib.host_to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def test_packed_training_on_eight_devices_equals_one(dataset):
    config = tiny_packed_config(0.6)
    config.optim.name = "sgd"
    l1, p1 = run_steps(config, mesh_lib.make_mesh(jax.devices()[:1]), first_batch(dataset, 16, 1, ("composition",), ("y",)))
    l8, p8 = run_steps(config, mesh_lib.make_mesh(), first_batch(dataset, 16, 8, ("composition",), ("y",)))
    np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_auto_packed_tokens_are_resolved_from_the_training_rows(dataset):
    from mmjax.nn.packing import auto_fraction
    from mmjax.systems.baselines import AUTO_PACKED, resolve_packed_tokens
    from mmjax.train.modes import packed_tokens_from_data

    c = tiny_packed_config(AUTO_PACKED)
    counts = dataset.ragged_lengths("composition/atomic_numbers")
    slots = int(dataset.manifest.padding["composition/elements"]["max"])
    assert counts.min() >= 1 and slots >= counts.max()
    got = resolve_packed_tokens(c, dataset, 64, log=None)
    assert 0.0 < got.system.packed_tokens == pytest.approx(auto_fraction(counts, slots, 64))
    assert resolve_packed_tokens(c, dataset, 4, log=None).system.packed_tokens == 0.0  # > 90 % of the slots
    assert c.system.packed_tokens == AUTO_PACKED  # a copy: the given config is untouched
    fixed = tiny_packed_config(0.3)
    assert resolve_packed_tokens(fixed, dataset, 4) is fixed
    # more than one device: padded (the packed gather spans the sharded batch)
    assert resolve_packed_tokens(c, dataset, 64, log=None, devices=8).system.packed_tokens == 0.0
    # the training command resolves it on its training iterator's rows at the global batch (one
    # device here: the test session has 8 simulated devices, so it resolves to padded)
    c.data.batch_per_device = 64 // jax.device_count()
    seen = packed_tokens_from_data(c, type("It", (), {"dataset": dataset})())
    assert jax.device_count() == 8 and seen.system.packed_tokens == 0.0
    with pytest.MonkeyPatch.context() as mp:  # as on a one-device machine
        mp.setattr(jax, "device_count", lambda: 1)
        c.data.batch_per_device = 64
        seen = packed_tokens_from_data(c, type("It", (), {"dataset": dataset})())
    assert seen.system.packed_tokens == pytest.approx(got.system.packed_tokens)
    # an unresolved -1 builds a padded system; any other negative is an error naming the key
    assert build_system(tiny_packed_config(AUTO_PACKED)).packed_tokens == 0.0
    with pytest.raises(ValueError, match=r"packed_tokens=-0\.5"):
        build_system(tiny_packed_config(-0.5))
