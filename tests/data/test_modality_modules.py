"""One home per modality (issue 14): each built-in modality is declared by its own module in
`mmjax.data.modalities`, and the featurisation driver, the store and the batch assembler iterate the
registry instead of naming modalities."""

import ast
import importlib
import pathlib

import numpy as np
import pytest

from mmjax.data import modalities as registry
from mmjax.data import schema as S
from mmjax.data.modalities.base import Modality

DATA = pathlib.Path(__file__).resolve().parents[2] / "mmjax" / "data"
# modules that must not name a modality: everything they do per modality goes through the registry
GENERIC = ("featurize.py", "pipeline.py", "store.py", "store_writer.py", "store_statistics.py", "device_store.py",
           "spec.py")


def _names_in_code(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, string) of every string constant in ``path`` that is a built-in modality name or
    one of its record keys (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    names = set(registry.BUILTIN)
    for m in registry.BUILTIN.values():
        names |= {m.presence_key, *m.record_dtypes}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
            and n.value in names]


def test_each_builtin_modality_is_one_module_registered_by_name():
    assert tuple(registry.BUILTIN) == tuple(S.MODALITIES)
    for name, modality in registry.BUILTIN.items():
        module = importlib.import_module(f"mmjax.data.modalities.{name}")
        assert module.MODALITY is modality and modality.name == name and isinstance(modality, Modality)
        assert registry.get(name) is modality
        assert modality.presence_key in modality.record_dtypes or name == "text"  # text: added by text_embed
    with pytest.raises(KeyError, match="unknown modality 'nope'; known: .*'charge_density'"):
        registry.get("nope")


@pytest.mark.parametrize("module", GENERIC)
def test_generic_data_modules_name_no_modality(module):
    assert _names_in_code(DATA / module) == []


def test_the_check_sees_a_named_modality(tmp_path):
    f = tmp_path / "x.py"
    f.write_text('"""crystal in a docstring is fine."""\nif m == "crystal":\n    key = "dos/mask"\n')
    assert _names_in_code(f) == [(2, "crystal"), (3, "dos/mask")]


def test_store_dtypes_and_scale_keys_come_from_the_modalities():
    from mmjax.data import store, store_statistics

    assert store.DTYPES["crystal/edge_kind"] == np.int8 and store.DTYPES["dos/mask"] == np.bool_
    assert set(store.RAGGED_PREFIXES) == {"crystal/", "composition/"}
    assert all(store_statistics.scaled(k) for k in ("xrd", "text_embedding", "dos/densities", "charge_density"))
    assert not store_statistics.scaled("crystal/distances")
