"""O9: every batch-coupled loss gives the same value and gradients on one device and with the
batch sharded over the 8 simulated CPU devices (tests/conftest.py), both as plain functions under
jit + NamedSharding (GSPMD) and as explicit shard_map bodies."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import objectives as obj

B, D, TAU = 16, 6, 0.3  # 2 rows per device
RNG = np.random.default_rng(0)
Z = [RNG.normal(size=(B, D)).astype(np.float32) for _ in range(3)]
MASK = RNG.random(B) > 0.3
MASK[:2] = False  # device 0 holds only masked rows


@pytest.fixture(scope="module")
def mesh():
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py must give 8 simulated CPU devices"
    return jax.sharding.Mesh(np.array(devices), ("data",))


def _assert_same(got, want, rtol=2e-5, atol=2e-6):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _sharded_args(mesh, args):
    def put(x):
        spec = P("data") if np.ndim(x) >= 1 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))
    return jax.tree.map(put, args)


# (plain loss, shard_map body, positional args, number of differentiable leading args, kwargs)
CASES = {
    "info_nce": (obj.info_nce, obj.info_nce_sharded, (Z[0], Z[1], TAU, MASK), 3, {}),
    "tensor_clip_paper": (obj.tensor_clip, obj.tensor_clip_sharded, (Z[0], Z[1], Z[2], TAU, MASK),
                          4, {"chunk_size": 1}),
    "tensor_clip_code": (obj.tensor_clip, obj.tensor_clip_sharded, (Z[0], Z[1], Z[2], TAU, MASK),
                         3, {"variant": "multimat_code"}),
    "barlow_twins": (obj.barlow_twins, obj.barlow_twins_sharded, (Z[0], Z[1], 0.05, MASK), 2, {}),
    "barlow_twins_3d": (obj.barlow_twins_3d, obj.barlow_twins_3d_sharded,
                        (Z[0], Z[1], Z[2], 0.05), 3, {"half_targets": True}),
    "vicreg": (
        lambda z, z2, mask: obj.vicreg(z, 1.0, 1.0, 0.5, z_other=z2, lambda_inv=2.0, mask=mask,
                                       use_std=True),
        lambda z, z2, mask, axis_name: obj.vicreg_sharded(
            z, 1.0, 1.0, 0.5, z_other=z2, lambda_inv=2.0, mask=mask, use_std=True,
            axis_name=axis_name),
        (Z[0], Z[1], MASK), 2, {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shard_map_body_equals_single_device(mesh, name):
    plain, body, args, n_diff, kwargs = CASES[name]
    argnums = tuple(range(n_diff))
    want = jax.jit(jax.value_and_grad(functools.partial(plain, **kwargs), argnums=argnums))(*args)
    sharded = obj.on_mesh(body, mesh, **kwargs)
    if name == "barlow_twins_3d":  # the mask as a call-time keyword array (sharded too)
        want = jax.jit(jax.value_and_grad(functools.partial(plain, mask=MASK, **kwargs),
                                          argnums=argnums))(*args)
        sharded = functools.partial(sharded, mask=MASK)
    got = jax.jit(jax.value_and_grad(sharded, argnums=argnums))(*args)
    _assert_same(got, want)
    assert np.all(np.isfinite(got[0])) and float(got[0]) > 0.0


@pytest.mark.parametrize("name", ["info_nce", "tensor_clip_code", "barlow_twins_3d", "vicreg"])
def test_plain_loss_under_gspmd_equals_single_device(mesh, name):
    plain, _, args, n_diff, kwargs = CASES[name]
    if name == "barlow_twins_3d":
        kwargs = dict(kwargs, mask=MASK)
    f = jax.jit(jax.value_and_grad(functools.partial(plain, **kwargs), argnums=tuple(range(n_diff))))
    want = f(*args)
    got = f(*_sharded_args(mesh, args))
    _assert_same(got, want)
    assert got[1][0].sharding.spec[0] == "data"  # the gradient stays batch-sharded


def test_pairwise_clip_sharded_with_a_pair_without_rows(mesh):
    emb = {"crystal": Z[0], "dos": Z[1], "text": Z[2]}
    present = {"crystal": np.ones(B, bool), "dos": MASK, "text": np.zeros(B, bool)}
    # anchored on "dos": pairs (dos, crystal) and (dos, text); the latter has no valid row.
    # (all_pairs_clip_sharded runs the same pairwise body over all pairs.)
    plain = functools.partial(obj.anchored_clip, anchor="dos")
    want = jax.jit(jax.value_and_grad(plain, argnums=(0, 2)))(emb, present, TAU)
    sharded = obj.on_mesh(obj.anchored_clip_sharded, mesh, anchor="dos")
    got = jax.jit(jax.value_and_grad(sharded, argnums=(0, 2)))(emb, present, TAU)
    _assert_same(got, want)
    np.testing.assert_allclose(got[0], obj.info_nce(Z[1], Z[0], TAU, MASK), rtol=1e-5)
    assert np.all(np.asarray(got[1][0]["text"]) == 0.0)
