"""Periodic neighbour graphs (CGCNN / MatBind and PotNet style) and Gaussian distance expansion.

Pure numpy; the neighbour search itself is pymatgen's Cython ``Structure.get_neighbor_list``.

Conventions shared by every function here:

* Edges point from a centre atom (``senders``) to a neighbour (``receivers``). Every periodic image
  of a neighbour is its own edge (no minimum-image collapse): in a 1-atom bcc cell with an 8 Å
  cutoff the centre has many edges whose receiver is atom 0 itself, each with its own ``images``.
* ``images`` are integer lattice offsets of the receiver's image relative to the fractional
  coordinates wrapped into [0, 1): the edge vector in Cartesian coordinates is
  ``(wrap(f[r]) + images - wrap(f[s])) @ lattice`` with ``wrap(f) = f - floor(f)``.
* Edges are grouped by centre (ascending), nearest first. Ties are broken deterministically by
  (distance rounded to ``DISTANCE_DECIMALS`` decimals, neighbour index, image a, image b, image c),
  so symmetry-equivalent neighbours whose distances differ only by float noise come out in a fixed
  order and the ``max_neighbors`` cut is reproducible.
"""

from __future__ import annotations

import numpy as np

DISTANCE_DECIMALS = 6  # Å; 1e-6 Å resolution for tie-breaking equal distances

# PotNet defaults (MultiMat config/potnet_config.py, PotNet configs/potnet.yaml).
POTNET_WEIGHTS = (-0.801, -0.074, 0.145)  # Coulomb 1/r, London 1/r^6, Pauli exp(-alpha r)
POTNET_ALPHA = 3.0
POTNET_LATTICE_RANGE = 3


def _wrapped_neighbor_list(structure, cutoff: float):
    """All (centre, neighbour, image, distance) within ``cutoff`` Å, images relative to wrapped coords.

    Returns centres int64 [E], neighbours int64 [E], images int64 [E, 3], distances float64 [E]
    (unsorted, self-pairs at zero offset excluded).
    """
    try:  # the Cython kernel behind Structure.get_neighbor_list, minus its per-call Python overhead
        from pymatgen.optimization.neighbors import find_points_in_spheres
    except ImportError:  # pragma: no cover - pure-Python pymatgen build
        centers, neighbors, images, distances = structure.get_neighbor_list(float(cutoff))
    else:
        cart = np.ascontiguousarray(structure.cart_coords, dtype=float)
        centers, neighbors, images, distances = find_points_in_spheres(
            cart, cart, r=float(cutoff), pbc=np.ascontiguousarray(structure.pbc, dtype=np.int64),
            lattice=np.ascontiguousarray(structure.lattice.matrix, dtype=float), tol=1e-8)
        keep = ~((centers == neighbors) & (distances <= 1e-8))  # the atom itself at zero offset
        centers, neighbors, images, distances = centers[keep], neighbors[keep], images[keep], distances[keep]
    # pymatgen's offsets are relative to the coordinates as stored; re-express them relative to the
    # coordinates wrapped into [0, 1) so that they do not depend on how the input was written.
    shift = np.floor(structure.frac_coords).astype(np.int64)
    images = np.rint(images).astype(np.int64) + shift[neighbors] - shift[centers]
    return centers.astype(np.int64), neighbors.astype(np.int64), images, distances


def _select_nearest(centers, neighbors, images, distances, n_atoms: int, max_neighbors: int | None):
    """Sort edges by (centre, distance, neighbour, image) and keep the first ``max_neighbors`` per centre.

    Returns the sorted, truncated arrays and the per-centre rank int64 [E'] (0 = nearest).
    """
    dkey = np.rint(distances * 10.0**DISTANCE_DECIMALS).astype(np.int64)
    if max_neighbors is not None and len(centers) > max_neighbors * n_atoms:
        # Stage 1 (speed): one int64 argsort by (centre, distance) finds each centre's
        # max_neighbors-th distance; only edges up to it (ties included) go to the full lexsort.
        coarse = np.argsort((centers << 40) | dkey, kind="stable")
        counts = np.bincount(centers, minlength=n_atoms)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        last = starts + np.minimum(counts, max_neighbors) - 1
        threshold = np.full(n_atoms, -1, np.int64)
        has = counts > 0
        threshold[has] = dkey[coarse[last[has]]]
        keep = dkey <= threshold[centers]
        centers, neighbors, images, distances, dkey = (
            centers[keep], neighbors[keep], images[keep], distances[keep], dkey[keep])
    order = np.lexsort((images[:, 2], images[:, 1], images[:, 0], neighbors, dkey, centers))
    centers, neighbors, images, distances = centers[order], neighbors[order], images[order], distances[order]
    counts = np.bincount(centers, minlength=n_atoms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(centers)) - starts[centers]
    if max_neighbors is not None:
        keep = rank < max_neighbors
        centers, neighbors, images, distances, rank = (
            centers[keep], neighbors[keep], images[keep], distances[keep], rank[keep])
    return centers, neighbors, images, distances, rank


def neighbor_graph(
    structure,
    cutoff: float = 8.0,
    max_neighbors: int | None = 12,
    *,
    pad_to_max: bool = False,
    ensure_neighbors: bool = False,
    max_expansions: int = 4,
) -> dict[str, np.ndarray]:
    """Periodic k-nearest-neighbour graph within a radius (CGCNN / MatBind: 8 Å x 12).

    Args:
      structure: pymatgen ``Structure`` with N sites.
      cutoff: search radius in Å.
      max_neighbors: keep at most this many nearest edges per centre (None: keep all in range).
      pad_to_max: CGCNN's padding. Centres with fewer than ``max_neighbors`` edges get extra edges
        to atom 0 with distance ``cutoff + 1`` and image (0, 0, 0), appended after their real edges,
        so that E = N * max_neighbors exactly (a dense [N, M] layout). Default False: no padding
        (padding is the batcher's job); isolated atoms then simply have zero edges.
      ensure_neighbors: jarvis / PotNet-style fallback. If some centre has fewer than
        ``max_neighbors`` neighbours within ``cutoff``, the radius is doubled (at most
        ``max_expansions`` times) until every centre has ``max_neighbors``; distances may then
        exceed ``cutoff``. Applied before ``pad_to_max``.

    Returns dict with
      senders int32 [E] (centre), receivers int32 [E] (neighbour), distances float32 [E] (Å),
      images int32 [E, 3] (receiver's lattice offset, see module docstring),
      atomic_numbers int32 [N].
    """
    n_atoms = len(structure)
    if n_atoms == 0:
        raise ValueError("neighbor_graph: empty structure")
    if not structure.is_ordered:
        raise ValueError(f"neighbor_graph: structure {structure.composition.formula!r} has partially occupied "
                         "sites; order it first (e.g. OrderDisorderedStructureTransformation)")
    if max_neighbors is not None and max_neighbors < 1:
        raise ValueError(f"max_neighbors must be >= 1 or None, got {max_neighbors}")
    if pad_to_max and max_neighbors is None:
        raise ValueError("pad_to_max needs a max_neighbors")
    radius = float(cutoff)
    centers, neighbors, images, distances = _wrapped_neighbor_list(structure, radius)
    if ensure_neighbors and max_neighbors is not None:
        for _ in range(max_expansions):
            if np.bincount(centers, minlength=n_atoms).min() >= max_neighbors:
                break
            radius *= 2.0
            centers, neighbors, images, distances = _wrapped_neighbor_list(structure, radius)
    centers, neighbors, images, distances, rank = _select_nearest(
        centers, neighbors, images, distances, n_atoms, max_neighbors)

    if pad_to_max:
        m = max_neighbors
        slot = centers * m + rank
        senders = np.repeat(np.arange(n_atoms, dtype=np.int64), m)
        recv = np.zeros(n_atoms * m, np.int64)
        dist = np.full(n_atoms * m, float(cutoff) + 1.0)
        img = np.zeros((n_atoms * m, 3), np.int64)
        recv[slot], dist[slot], img[slot] = neighbors, distances, images
        centers, neighbors, distances, images = senders, recv, dist, img

    return {
        "senders": centers.astype(np.int32),
        "receivers": neighbors.astype(np.int32),
        "distances": distances.astype(np.float32),
        "images": images.astype(np.int32),
        "atomic_numbers": np.asarray(structure.atomic_numbers, dtype=np.int32),
    }


def gaussian_expansion(
    distances, dmin: float = 0.0, dmax: float = 8.0, n_centers: int = 41, width: float | None = None
) -> np.ndarray:
    """CGCNN ``GaussianDistance``: exp(-(d - mu_k)^2 / width^2), float32 [..., n_centers].

    Centres mu_k = linspace(dmin, dmax, n_centers) (0, 0.2, ..., 8.0 Å by default: 41 centres,
    identical to CGCNN's ``arange(dmin, dmax + step, step)`` with step 0.2). ``width`` defaults to
    the centre spacing, as CGCNN's ``var=step``; note CGCNN divides by width **squared** (no factor
    2), so this is a Gaussian with standard deviation width / sqrt(2). Distances in Å.
    """
    if n_centers < 2:
        raise ValueError("n_centers must be >= 2")
    spacing = (dmax - dmin) / (n_centers - 1)
    centers = dmin + spacing * np.arange(n_centers)  # = linspace(dmin, dmax, n_centers)
    if width is None:
        width = spacing
    d = np.asarray(distances, dtype=np.float64)[..., None]
    return np.exp(-((d - centers) ** 2) / (width * width)).astype(np.float32)


def _lattice_translations(lattice_range: int) -> np.ndarray:
    """Integer translations n in [-R, R]^3, int64 [(2R+1)^3, 3]."""
    r = np.arange(-lattice_range, lattice_range + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def periodic_potentials(
    structure,
    alpha: float = POTNET_ALPHA,
    lattice_range: int = POTNET_LATTICE_RANGE,
    chunk_pairs: int = 4096,
) -> np.ndarray:
    """Lattice sums of three pair potentials for every ordered atom pair (i, j), float64 [N*N, 3].

    Pair (i, j) is row i * N + j. With v = x_i - x_j (Cartesian, Å) and translations
    T = n @ lattice for integer n with every |n_k| <= ``lattice_range`` (a (2R+1)^3 box in
    lattice-index space, PotNet's ``R``), excluding the r = 0 self term (i == j, n = 0):

      column 0  Coulomb   sum 1 / |v + T|            (PotNet zeta, p = 0.5)
      column 1  London    sum 1 / |v + T|^6          (PotNet zeta, p = 3.0)
      column 2  Pauli     sum exp(-alpha |v + T|)    (PotNet exp, alpha = 3.0)

    Truncation: this is a direct real-space sum over the box. PotNet's Cython code evaluates the
    zeta sums with an Ewald-type (incomplete-gamma) analytic continuation instead; the London and
    Pauli columns agree with that up to the box truncation (tails ~R^-3 and exp(-alpha R a)), but
    the Coulomb column here grows with ``lattice_range`` (the conditionally convergent 1/r sum is
    not regularised), so treat it as a fixed-R descriptor, not a Madelung energy.
    """
    cart = np.asarray(structure.cart_coords, dtype=np.float64)
    n = len(cart)
    shifts = _lattice_translations(lattice_range) @ structure.lattice.matrix  # [T, 3]
    diff = (cart[:, None, :] - cart[None, :, :]).reshape(-1, 3)  # [N*N, 3]
    out = np.empty((n * n, 3))
    for start in range(0, n * n, chunk_pairs):
        v = diff[start:start + chunk_pairs, None, :] + shifts[None]  # [P, T, 3]
        r = np.sqrt(np.einsum("ptk,ptk->pt", v, v))
        valid = r > 1e-8
        rs = np.where(valid, r, 1.0)
        out[start:start + chunk_pairs, 0] = np.where(valid, 1.0 / rs, 0.0).sum(1)
        out[start:start + chunk_pairs, 1] = np.where(valid, rs ** -6, 0.0).sum(1)
        out[start:start + chunk_pairs, 2] = np.where(valid, np.exp(-alpha * rs), 0.0).sum(1)
    return out


def _undirected(senders, receivers, images, distances):
    """Symmetric closure of a directed edge set: add (r -> s, -image) for every (s -> r, image).

    Duplicates (an edge already present in both directions) are kept once. Output sorted by
    (sender, distance, receiver, image). This is what jarvis ``nearest_neighbor_edges`` (canonised)
    + ``build_undirected_edgedata`` produce for PotNet.
    """
    s = np.concatenate([senders, receivers])
    r = np.concatenate([receivers, senders])
    im = np.concatenate([images, -images])
    d = np.concatenate([distances, distances])
    key = np.concatenate([s[:, None], r[:, None], im], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    s, r, im, d = s[first], r[first], im[first], d[first]
    order = np.lexsort((im[:, 2], im[:, 1], im[:, 0], r, np.round(d, DISTANCE_DECIMALS), s))
    return s[order], r[order], im[order], d[order]


def potnet_graph(
    structure,
    cutoff: float = 4.0,
    max_neighbors: int = 16,
    *,
    potentials=POTNET_WEIGHTS,
    alpha: float = POTNET_ALPHA,
    lattice_range: int = POTNET_LATTICE_RANGE,
    ensure_neighbors: bool = True,
) -> dict[str, np.ndarray]:
    """PotNet graph: undirected local k-NN edges plus N^2 "infinite" potential edges.

    Local edges: ``neighbor_graph(cutoff, max_neighbors, ensure_neighbors=...)`` made undirected
    (every edge also added reversed, duplicates once; see ``_undirected``), ``edge_kind`` 0,
    ``potential`` 0. ``ensure_neighbors`` defaults to True because jarvis' ``nearest_neighbor_edges``
    (used by PotNet) enlarges the radius when an atom has fewer than ``max_neighbors``.

    Infinite edges: every ordered pair (i, j) of unit-cell atoms, self pairs included (N^2 edges,
    row-major: sender i, receiver j), ``edge_kind`` 1, ``distances`` 0 and
    ``potential = sum_k potentials[k] * periodic_potentials(...)[:, k]`` (PotNet's
    ``sum_i attr[:, i] * pot_i`` with potentials = [-0.801, -0.074, 0.145]).

    Returns dict with senders, receivers int32 [E], distances float32 [E] (Å, 0 on infinite edges),
    edge_kind int8 [E], potential float32 [E] (0 on local edges), atomic_numbers int32 [N];
    local edges first, then the N^2 infinite edges.
    """
    local = neighbor_graph(structure, cutoff, max_neighbors, ensure_neighbors=ensure_neighbors)
    s, r, _, d = _undirected(
        local["senders"].astype(np.int64), local["receivers"].astype(np.int64),
        local["images"].astype(np.int64), local["distances"])
    n = len(structure)
    inf_s = np.repeat(np.arange(n), n)
    inf_r = np.tile(np.arange(n), n)
    pot = periodic_potentials(structure, alpha=alpha, lattice_range=lattice_range) @ np.asarray(
        potentials, dtype=np.float64)
    n_local = len(s)
    return {
        "senders": np.concatenate([s, inf_s]).astype(np.int32),
        "receivers": np.concatenate([r, inf_r]).astype(np.int32),
        "distances": np.concatenate([d, np.zeros(n * n)]).astype(np.float32),
        "edge_kind": np.concatenate([np.zeros(n_local), np.ones(n * n)]).astype(np.int8),
        "potential": np.concatenate([np.zeros(n_local), pot]).astype(np.float32),
        "atomic_numbers": local["atomic_numbers"],
    }
