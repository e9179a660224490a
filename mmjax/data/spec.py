"""What a config asks of the data, resolved without the training engine: modalities, targets,
the `FeatureSpec` to featurise with (defined here), and the train / eval / test split (used by `mmjax.systems`,
`mmjax.data.cache` and `mmjax.train.data`; `mmjax.data` never imports `mmjax.train`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from mmjax.data import modalities as registry
from mmjax.data import schema as S
from mmjax.data.features.dos import dos_energy_grid
from mmjax.data.features.elements import element_features
from mmjax.data.features.xrd import two_theta_grid
from mmjax.data.splits import random_split

# Class labels as stored ("label/<name>") -> offset subtracted in Batches, so classification
# targets in a Batch are 0-based class indices (space group 1..230 -> 0..229).
CLASS_LABEL_OFFSETS = {"space_group": 1, "crystal_system": 0}
SPLITS = ("train", "eval", "test", "all")


GRAPH_KINDS = {"cgcnn": (8.0, 12), "potnet": (4.0, 16)}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Which modalities to compute and how (one spec per stored dataset; saved in its manifest).

    graph: crystal graph kind, "cgcnn" (neighbour graph, default 8 Å x 12), "potnet" (4 Å x 16
        local edges + infinite potential edges) or None (no crystal graph).
    cutoff (Å) / max_neighbors: None = the kind's default.
    xrd: powder pattern on ``xrd_two_theta_range`` (degrees 2θ, end excluded) at ``xrd_step``
        degrees, Gaussian σ ``xrd_sigma`` degrees.
    composition: element indices + fractions; a material with more than ``max_elements``
        distinct elements is a bad record.
    symmetry: space group / crystal system labels at ``symprec`` (Å).
    dos: DOS (when the material has one) resampled to ``dos_length`` points on the
        Fermi-shifted grid ``dos_range`` (eV).
    charge_density: voxel grid (when the material has one) resampled to ``charge_density_size``³.
    text: store the raw description ("text/raw", "text/source"); the material's own text, or
        ``describe_structure`` when it has none and ``describe_missing_text`` (robocrys when
        ``text_robocrys``, about 0.5-1.5 s per structure, else the fast template).
    targets: names of ``Material.targets`` to store as "target/<name>" (float32 [] or [d] for a
        vector target; no key when the material has no label, `target_value`);
        None stores every target a material has.
    max_atomic_number: a material with an element beyond it is a bad record (set from the
        model's fixed element table, e.g. 100 for CGCNN's atom_init, so that no element is
        silently mapped onto another table row); None = no limit.
    extra: registered dense modalities to compute (`mmjax.data.modalities.register`), by name.
    """

    graph: str | None = "cgcnn"
    cutoff: float | None = None
    max_neighbors: int | None = None
    xrd: bool = True
    xrd_two_theta_range: tuple[float, float] = S.XRD_TWO_THETA_RANGE
    xrd_step: float = S.XRD_STEP
    xrd_sigma: float = 0.1
    composition: bool = True
    max_elements: int = S.MAX_ELEMENTS
    symmetry: bool = True
    symprec: float = 0.1
    dos: bool = True
    dos_length: int = S.DOS_LENGTH
    dos_range: tuple[float, float] = (-10.0, 10.0)
    charge_density: bool = True
    charge_density_size: int = S.DENSITY_GRID
    text: bool = False
    describe_missing_text: bool = True
    text_robocrys: bool = True
    targets: tuple[str, ...] | None = None
    max_atomic_number: int | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self):
        if self.graph is not None and self.graph not in GRAPH_KINDS:
            raise ValueError(f"FeatureSpec.graph must be one of {sorted(GRAPH_KINDS)} or None, got {self.graph!r}")
        if self.graph is not None:
            cutoff, k = GRAPH_KINDS[self.graph]
            object.__setattr__(self, "cutoff", float(cutoff if self.cutoff is None else self.cutoff))
            object.__setattr__(self, "max_neighbors", int(k if self.max_neighbors is None else self.max_neighbors))
        for name in ("xrd_two_theta_range", "dos_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not value[0] < value[1]:
                raise ValueError(f"FeatureSpec.{name} must be (low, high) with low < high, got {value}")
            object.__setattr__(self, name, value)
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        object.__setattr__(self, "extra", tuple(str(m) for m in self.extra))
        unknown = [m for m in self.extra if registry.registered(m) is None]
        if unknown:
            raise ValueError(f"FeatureSpec.extra: {unknown} are not registered modalities "
                             f"(known: {list(registry.known())}; mmjax.data.modalities.register)")
        if self.max_elements < 1:
            raise ValueError("FeatureSpec.max_elements must be >= 1")

    @classmethod
    def from_config(cls, config: Any = None, **overrides) -> "FeatureSpec":
        """Build from an ``ml_collections.ConfigDict`` / dict (same field names) plus overrides."""
        values = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FeatureSpec fields {sorted(unknown)}; known: {sorted(known)}")
        for key in ("xrd_two_theta_range", "dos_range", "targets", "extra"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists). ``extra`` is left out when empty, so the dict (and
        every cache key made from it) of a spec without registered modalities is what it was
        before the field existed."""
        d = json_ready(dataclasses.asdict(self))
        if not d["extra"]:
            del d["extra"]
        return d

    @property
    def dos_grid(self) -> np.ndarray:
        """float32 [dos_length] Fermi-shifted energies (eV) every stored DOS is resampled onto."""
        return np.asarray(dos_energy_grid(self.dos_length, *self.dos_range), np.float32)


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def config_targets(config) -> tuple[str, ...]:
    """Target names a run batches: ``config.data.targets``, else the keys of ``config.system.targets``."""
    data = config.get("data", None) if hasattr(config, "get") else None
    names = tuple((data.get("targets", ()) if data is not None else ()) or ())
    if not names and "targets" in config.system and config.system.targets is not None:
        t = config.system.targets
        names = tuple(t.keys() if hasattr(t, "keys") else t)
    return names


def config_target_dims(config) -> dict[str, int]:
    """``{target: components}`` of the vector regression targets a config declares:
    ``config.data.target_dims`` (e.g. ``{"elastic_tensor": 21}``) and any ``(d,)`` entry of
    ``config.system.targets``. Scalar targets are not listed. Raises on a width < 1 or on two
    declarations that disagree (naming the key)."""
    data = config.get("data", None) if hasattr(config, "get") else None
    dims = {}
    declared = data.get("target_dims", None) if data is not None else None
    for name, d in (dict(declared.items()) if declared is not None else {}).items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"config.data.target_dims.{name}={d!r}: a vector target's component count is an int >= 1")
        dims[str(name)] = int(d)
    system = config.get("system", None) if hasattr(config, "get") else None
    targets = system.get("targets", None) if system is not None else None
    for name, n in (dict(targets.items()) if targets is not None and hasattr(targets, "items") else {}).items():
        if name in dims and not isinstance(n, (tuple, list)):
            raise ValueError(f"target {name!r}: config.system.targets.{name}={n!r} is a class count (or 1, a scalar) "
                             f"but config.data.target_dims declares {dims[name]} components; write "
                             f"config.system.targets.{name}=({dims[name]},)")
        if isinstance(n, (tuple, list)):
            d = int(n[0]) if len(n) == 1 else -1
            if d < 1:
                raise ValueError(f"config.system.targets.{name}={n!r}: a vector target is (components,)")
            if dims.get(name, d) != d:
                raise ValueError(f"target {name!r}: config.system.targets gives {d} components, "
                                 f"config.data.target_dims {dims[name]}")
            dims[str(name)] = d
    return dims


def check_target_shapes(schema: dict, config, targets) -> None:
    """Each regression target's per-record shape in a dataset ``schema`` (manifest) agrees with
    the config: ``[]`` for a scalar target, ``[d]`` where `config_target_dims` declares ``d``.
    Raises ValueError naming the target and the config key to set."""
    dims = config_target_dims(config)
    for name in targets:
        entry = schema.get(f"target/{name}")
        if entry is None:
            if name in dims and f"label/{name}" in schema:
                raise ValueError(f"config.data.target_dims.{name}: {name!r} is a classification label, not a vector")
            continue
        shape = tuple(entry["shape"])
        want = (dims[name],) if name in dims else ()
        if shape == want:
            continue
        if not want:
            raise ValueError(f"target {name!r} has {shape[0]} components per record in the dataset; declare it "
                             f"with config.data.target_dims.{name}={shape[0]}")
        got = "a scalar" if not shape else f"{shape[0]} components"
        raise ValueError(f"config.data.target_dims.{name}={dims[name]}, but the dataset's target/{name} is {got} "
                         "per record")


def config_option(section, key, default):
    """``section.key`` when the config has it, else `default` (configs built on older bases)."""
    try:
        return section[key] if key in section else default
    except (KeyError, AttributeError):
        return default


def config_modalities(config) -> tuple[str, ...]:
    """``config.data.modalities`` (empty = every modality the stored dataset has)."""
    return tuple(config_option(config.data, "modalities", ()) or ())


def _element_table_of(config) -> str:
    """The fixed element table a baseline encoder reads (``config.system.encoder.element_table``), or ""."""
    system = config.get("system", None)
    enc = system.get("encoder", None) if system is not None else None
    return str(enc.get("element_table", "") or "") if hasattr(enc, "get") else ""


def feature_spec(config) -> "FeatureSpec":
    """The `FeatureSpec` implied by ``config.data``: which modalities to compute and how.

    A modality is featurised when ``config.data.modalities`` names it (all structural ones when it
    is empty); symmetry labels and every source target are always stored (so one cached dataset
    serves pretraining, training and transfer). ``config.data.features`` holds the featuriser
    settings (graph kind, cutoff, max_neighbors, xrd range / step / sigma, max_elements, text).
    """

    mods = config_modalities(config) or registry.DEFAULT_MODALITIES
    unknown = [m for m in mods if m not in registry.known()]
    if unknown:
        raise ValueError(f"config.data.modalities: unknown modality {', '.join(map(repr, unknown))}; known: "
                         f"{list(registry.known())} (a new one: mmjax.data.modalities.register)")
    f = config_option(config.data, "features", None)
    f = f.to_dict() if f is not None else {}
    kw = dict(symmetry=True, targets=None, extra=tuple(m for m in mods if registry.registered(m) is not None))
    for name, modality in registry.BUILTIN.items():
        kw.update(modality.spec_switch(name in mods, f))
    for key in ("cutoff", "max_neighbors", "xrd_sigma", "xrd_step", "max_elements", "symprec", "dos_length"):
        if f.get(key) not in (None, 0, 0.0):  # 0 = the featuriser's default
            kw[key] = f[key]
    if f.get("text_robocrys") is not None:  # a bool: False must reach the spec too
        kw["text_robocrys"] = bool(f["text_robocrys"])
    table = _element_table_of(config)
    if table:

        kw["max_atomic_number"] = int(element_features(table).shape[0] - 1)
    if f.get("xrd_two_theta_range"):
        kw["xrd_two_theta_range"] = tuple(f["xrd_two_theta_range"])
    if f.get("dos_range"):
        kw["dos_range"] = tuple(f["dos_range"])
    return FeatureSpec(**kw)


def stored_modalities(dataset) -> tuple[str, ...]:
    """Batch modalities the stored dataset has."""

    return tuple(m for m in registry.known() if registry.presence_key(m) in dataset.manifest.schema)


def check_modalities(dataset, wanted: Sequence[str], what: str) -> None:
    """Raise ValueError naming each modality of `wanted` that `dataset` lacks."""
    have = stored_modalities(dataset)
    missing = [m for m in wanted if m not in have]
    if missing:
        raise ValueError(f"{what}: the config needs modality {', '.join(repr(m) for m in missing)}, which the "
                         f"dataset at {dataset.root} does not have (it has {list(have)}); give data with "
                         f"{' and '.join(missing)} (e.g. structures rather than compositions) or another config")


def split_indices(config, n: int) -> dict[str, np.ndarray]:
    """``{"train", "eval", "test", "all"}`` index arrays: ``random_split(n, config.data.split, seed)``."""

    fractions = tuple(config_option(config.data, "split", (0.8, 0.1, 0.1)))
    train, val, test = random_split(n, fractions, seed=int(config_option(config.data, "split_seed", 0)))
    return {"train": train, "eval": val, "test": test, "all": np.arange(n, dtype=np.int64)}


def xrd_points(config) -> int:
    """Length L of the XRD patterns the featuriser writes for ``config`` (`feature_spec`'s 2-theta
    range and step: 4250 for 5-90 deg at 0.02 deg)."""
    spec = feature_spec(config)
    return len(two_theta_grid(*spec.xrd_two_theta_range, spec.xrd_step))


def xrd_tokens(config, encoder: dict, where: str, default_patch: int) -> dict:
    """``encoder`` (`mmjax.nn.XrdTransformer` kwargs) with ``num_tokens`` derived from the XRD grid:
    ``xrd_points(config) / patch_size``. The grid is declared once (``config.data.features``); a
    grid that is not a whole number of patches, or a stated ``num_tokens`` that disagrees with it,
    is a ValueError naming the keys (``where`` = the config section, e.g. "config.system.xrd"). The
    derived count is written into that section, so the config a run saves names it."""
    spec = feature_spec(config)
    points = xrd_points(config)
    patch = int(encoder.get("patch_size", default_patch))
    grid = (f"config.data.features: 2-theta {tuple(spec.xrd_two_theta_range)} deg, step {spec.xrd_step} deg "
            f"-> {points} points")
    if patch < 1 or points % patch:
        raise ValueError(f"{where}.patch_size={patch} does not divide the XRD grid ({grid})")
    tokens = points // patch
    stated = encoder.get("num_tokens")
    if stated is not None and int(stated) != tokens:
        raise ValueError(f"{where}.num_tokens={stated} disagrees with the XRD grid ({grid} = {tokens} x {patch}); "
                         f"leave num_tokens out (it is derived from the grid) or change the grid")
    section = config
    for part in where.split(".")[1:]:  # "config.system.xrd" -> config.system.xrd
        section = section[part] if section is not None and part in section else None
    if section is not None and "num_tokens" not in section:  # the derived value, in the config a run saves
        unlocked = getattr(config, "unlocked", None)  # the CLI locks its config; this key is derived
        try:
            if unlocked is not None:
                with unlocked():
                    section["num_tokens"] = tokens
            else:
                section["num_tokens"] = tokens
        except (KeyError, TypeError, AttributeError):  # a frozen config: nothing written
            pass
    return {**encoder, "num_tokens": tokens}
