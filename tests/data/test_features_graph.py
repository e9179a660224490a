"""Neighbour graphs, PotNet graphs and Gaussian expansion against brute-force numpy references."""

import gzip
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from mmjax.features import gaussian_expansion, neighbor_graph, periodic_potentials, potnet_graph


def brute_force_graph(structure, cutoff, max_neighbors):
    """Independent reference: loop over an image box and all pairs, sort per centre, keep the nearest."""
    frac = structure.frac_coords - np.floor(structure.frac_coords)
    lat = structure.lattice.matrix
    recip = np.linalg.inv(lat).T  # rows b_i with a_i . b_j = delta_ij; layer spacing 1/|b_i|
    nmax = [int(np.ceil(cutoff * np.linalg.norm(recip[k]))) + 1 for k in range(3)]
    rows = []
    for i in range(len(frac)):
        for j in range(len(frac)):
            for n in itertools.product(*[range(-m, m + 1) for m in nmax]):
                d = float(np.linalg.norm((frac[j] + np.array(n) - frac[i]) @ lat))
                if 1e-8 < d <= cutoff:
                    rows.append((i, round(d, 6), j, n[0], n[1], n[2], d))
    rows.sort()
    out, count = [], {}
    for r in rows:
        count[r[0]] = count.get(r[0], 0) + 1
        if max_neighbors is None or count[r[0]] <= max_neighbors:
            out.append(r)
    senders = np.array([r[0] for r in out], dtype=np.int64)
    receivers = np.array([r[2] for r in out], dtype=np.int64)
    images = np.array([r[3:6] for r in out], dtype=np.int64).reshape(-1, 3)
    distances = np.array([r[6] for r in out])
    return senders, receivers, images, distances


def assert_matches_brute_force(structure, cutoff, max_neighbors):
    g = neighbor_graph(structure, cutoff, max_neighbors)
    s, r, im, d = brute_force_graph(structure, cutoff, max_neighbors)
    assert set(g) == {"senders", "receivers", "distances", "images", "atomic_numbers"}
    assert g["senders"].dtype == np.int32 and g["receivers"].dtype == np.int32
    assert g["distances"].dtype == np.float32 and g["images"].dtype == np.int32
    assert g["images"].shape == (len(s), 3)
    np.testing.assert_array_equal(g["senders"], s)
    np.testing.assert_array_equal(g["receivers"], r)
    np.testing.assert_array_equal(g["images"], im)
    np.testing.assert_allclose(g["distances"], d, rtol=1e-6)
    np.testing.assert_array_equal(g["atomic_numbers"], structure.atomic_numbers)
    return g


@pytest.fixture(scope="module")
def perovskites(shared_data):
    with gzip.open(shared_data / "perovskites" / "structures_all.json.gz", "rt") as f:
        data = json.load(f)
    ids = sorted(data, key=int)[:2]
    return [Structure.from_str(data[i]["poscar"], fmt="poscar") for i in ids]


def test_perovskites_match_brute_force(perovskites):
    for s in perovskites:
        g = assert_matches_brute_force(s, 8.0, 12)
        assert len(g["senders"]) == 12 * len(s)
        assert g["distances"].max() <= 8.0


def test_real_triclinic_structure_matches_brute_force(shared_data):
    df = pd.read_csv(shared_data / "mp40" / "mp40_test.csv.gz")
    tri = df[df.space_group_number <= 2]
    row = tri.loc[tri.cif.str.count("\n").idxmin()]  # the smallest triclinic cell
    s = Structure.from_str(row.cif, fmt="cif")
    assert 2 <= len(s) <= 12
    assert s.lattice.is_orthogonal is False
    assert_matches_brute_force(s, 5.0, 12)


def test_synthetic_triclinic_with_unwrapped_coordinates():
    lat = Lattice.from_parameters(3.1, 4.3, 5.2, 75, 82, 101)
    coords = [[0.1, 0.2, 0.3], [1.6, -0.3, 0.9], [-0.25, 0.75, 2.1]]  # outside [0, 1) on purpose
    s = Structure(lat, ["Si", "O", "O"], coords, to_unit_cell=False)
    g = assert_matches_brute_force(s, 6.0, 12)
    wrapped = Structure(lat, ["Si", "O", "O"], np.mod(coords, 1.0))
    gw = neighbor_graph(wrapped, 6.0, 12)
    for key in ("senders", "receivers", "images"):
        np.testing.assert_array_equal(g[key], gw[key])
    # images reproduce the distances from the wrapped coordinates
    f = np.mod(coords, 1.0)
    vec = (f[g["receivers"]] + g["images"] - f[g["senders"]]) @ lat.matrix
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), g["distances"], rtol=1e-6)


def test_every_periodic_image_is_its_own_edge():
    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    assert len(fe) == 1
    g = assert_matches_brute_force(fe, 8.0, None)
    assert len(g["senders"]) > 100  # all neighbours are images of atom 0
    assert (g["receivers"] == 0).all()
    assert len({tuple(x) for x in g["images"]}) == len(g["images"])
    g12 = neighbor_graph(fe, 8.0, 12)
    assert len(g12["senders"]) == 12 and (g12["receivers"] == 0).all()
    # bcc: 8 nearest at a*sqrt(3)/2, then 6 at a -> the 12 kept are 8 + 4 of the 6 (tie order fixed)
    np.testing.assert_allclose(g12["distances"][:8], 2.87 * np.sqrt(3) / 2, rtol=1e-5)
    np.testing.assert_allclose(g12["distances"][8:], 2.87, rtol=1e-5)


def test_isolated_atom_no_crash_padding_and_fallback():
    s = Structure(Lattice.cubic(20.0), ["Ar"], [[0.5, 0.5, 0.5]])
    g = neighbor_graph(s, 8.0, 12)
    assert all(len(g[k]) == 0 for k in ("senders", "receivers", "distances", "images"))
    assert g["images"].shape == (0, 3)
    padded = neighbor_graph(s, 8.0, 12, pad_to_max=True)
    np.testing.assert_array_equal(padded["senders"], np.zeros(12))
    np.testing.assert_array_equal(padded["receivers"], np.zeros(12))
    np.testing.assert_array_equal(padded["distances"], np.full(12, 9.0, np.float32))
    wide = neighbor_graph(s, 8.0, 12, ensure_neighbors=True)
    assert len(wide["senders"]) == 12 and wide["distances"].min() == pytest.approx(20.0)
    s_ref, r_ref, im_ref, _ = brute_force_graph(s, 32.0, 12)
    np.testing.assert_array_equal(wide["images"], im_ref)


def test_pad_to_max_keeps_real_edges_first():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    full = neighbor_graph(s, 3.9, 12)  # 8 neighbours at 3.46 A each
    counts = np.bincount(full["senders"], minlength=2)
    np.testing.assert_array_equal(counts, [8, 8])
    padded = neighbor_graph(s, 3.9, 12, pad_to_max=True)
    assert len(padded["senders"]) == 24
    for c in range(2):
        rows = padded["distances"][padded["senders"] == c]
        real = full["distances"][full["senders"] == c]
        np.testing.assert_array_equal(rows[: len(real)], real)
        np.testing.assert_array_equal(rows[len(real):], np.float32(4.9))
        np.testing.assert_array_equal(padded["receivers"][padded["senders"] == c][len(real):], 0)


def test_gaussian_expansion_matches_cgcnn_formula():
    d = np.array([0.0, 0.2, 3.14159, 7.9, 9.0])
    out = gaussian_expansion(d)
    assert out.shape == (5, 41) and out.dtype == np.float32
    filt = np.arange(0.0, 8.0 + 0.2, 0.2)[:41]  # CGCNN GaussianDistance(0, 8, 0.2)
    ref = np.exp(-((d[:, None] - filt[None, :]) ** 2) / 0.2**2)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    assert out[1, 1] == pytest.approx(1.0) and out[1, 0] == pytest.approx(np.exp(-1.0), rel=1e-6)
    custom = gaussian_expansion(np.array([1.0]), dmin=0.0, dmax=4.0, n_centers=5, width=0.5)
    np.testing.assert_allclose(custom[0], np.exp(-((1.0 - np.arange(5.0)) ** 2) / 0.25), rtol=1e-6)


def brute_force_potentials(structure, alpha, lattice_range):
    cart = structure.cart_coords
    lat = structure.lattice.matrix
    n = len(cart)
    out = np.zeros((n * n, 3))
    rng = range(-lattice_range, lattice_range + 1)
    for i in range(n):
        for j in range(n):
            for t in itertools.product(rng, rng, rng):
                r = np.linalg.norm(cart[i] - cart[j] + np.array(t) @ lat)
                if r < 1e-8:
                    continue
                out[i * n + j] += [1.0 / r, r**-6, np.exp(-alpha * r)]
    return out


def test_potnet_lattice_sums_against_brute_force():
    s = Structure(Lattice.from_parameters(3.0, 3.4, 3.8, 80, 95, 105), ["Ga", "N"],
                  [[0.0, 0.0, 0.0], [0.3, 0.6, 0.45]])
    got = periodic_potentials(s, alpha=3.0, lattice_range=2)
    np.testing.assert_allclose(got, brute_force_potentials(s, 3.0, 2), rtol=1e-10)


def test_potnet_graph_structure_and_symmetry():
    s = Structure(Lattice.from_parameters(3.0, 3.4, 3.8, 80, 95, 105), ["Ga", "N"],
                  [[0.0, 0.0, 0.0], [0.3, 0.6, 0.45]])
    g = potnet_graph(s, cutoff=4.0, max_neighbors=16, lattice_range=1)
    assert set(g) == {"senders", "receivers", "distances", "edge_kind", "potential", "atomic_numbers"}
    assert g["edge_kind"].dtype == np.int8 and g["potential"].dtype == np.float32
    local = g["edge_kind"] == 0
    inf = g["edge_kind"] == 1
    assert inf.sum() == 4
    np.testing.assert_array_equal(g["senders"][inf], [0, 0, 1, 1])
    np.testing.assert_array_equal(g["receivers"][inf], [0, 1, 0, 1])
    assert (g["distances"][inf] == 0).all() and (g["potential"][local] == 0).all()
    expected = brute_force_potentials(s, 3.0, 1) @ np.array([-0.801, -0.074, 0.145])
    np.testing.assert_allclose(g["potential"][inf], expected, rtol=1e-5)
    # undirected: the multiset of (s, r, d) equals that of (r, s, d)
    fwd = sorted(zip(g["senders"][local], g["receivers"][local], np.round(g["distances"][local], 4)))
    bwd = sorted(zip(g["receivers"][local], g["senders"][local], np.round(g["distances"][local], 4)))
    assert fwd == bwd
    # contains the directed 16-NN edges, and every centre has at least 16 local edges
    knn = neighbor_graph(s, 4.0, 16, ensure_neighbors=True)
    assert np.bincount(g["senders"][local]).min() >= 16
    assert len(g["senders"][local]) >= len(knn["senders"])
    assert np.isfinite(g["potential"]).all()


def test_bad_inputs_raise_clear_errors():
    disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="partially occupied"):
        neighbor_graph(disordered)
    s = Structure(Lattice.cubic(3.0), ["Fe"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="max_neighbors"):
        neighbor_graph(s, 8.0, 0)
    with pytest.raises(ValueError, match="pad_to_max"):
        neighbor_graph(s, 8.0, None, pad_to_max=True)
