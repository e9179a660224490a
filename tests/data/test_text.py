"""Text descriptions (robocrys + template fallback, cache, workers) and MatSciBERT normalisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mmjax.data.features import text as text_mod
from mmjax.data.features import text_cache
from mmjax.data.features.text_cache import describe_structures
from mmjax.data.features.text import (
    MATSCIBERT_CHAR_MAP,
    describe_structure,
    nearest_neighbor_bonds,
    normalize_text,
    template_description,
)
from mmjax.data.material import RecordError

AVOGADRO = 6.02214076e23


def nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def disordered():
    """Rock-salt-like cell with a 50/50 Fe/Co site: robocrys cannot describe it."""
    return Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def mp_texts(shared_data):
    import pandas as pd

    return pd.read_csv(shared_data / "mp_text" / "texts.csv.gz")


# ---------------------------------------------------------------------------------------------
# normalize_text


def test_matscibert_table_was_copied_whole():
    # vocab_mappings.txt has 613 lines and 612 distinct keys (U+2208 appears twice).
    assert len(MATSCIBERT_CHAR_MAP) == 612
    assert MATSCIBERT_CHAR_MAP["\u2013"] == "-"  # en dash
    assert MATSCIBERT_CHAR_MAP["\u00bd"] == "1/2"
    assert MATSCIBERT_CHAR_MAP["\u215c"] == " 3/8 "  # replacement with surrounding spaces
    assert MATSCIBERT_CHAR_MAP["\u22ee"] == " "  # vertical ellipsis -> space
    assert "\u00b9" not in MATSCIBERT_CHAR_MAP and "\u2081" not in MATSCIBERT_CHAR_MAP


def test_normalize_hand_cases():
    # Å -> A (accent stripped), combining overline dropped, subscripts/superscripts through the
    # table, ¹ (not in the table) -> space, en dash -> hyphen, unknown symbol -> space, tab -> space.
    assert normalize_text("Na₃Bi(P₂O₇)₂ in P̅1") == "Na3Bi(P2O7)2 in P1"
    assert normalize_text("Na¹⁺ and O²⁻") == "Na + and O2-"
    assert normalize_text("2.30–2.41 Å") == "2.30-2.41 A"
    assert normalize_text("a\tb ☃ c\nd") == "a b   c\nd"
    assert normalize_text("½ µm") == "1/2 μm"
    assert normalize_text("Na¹⁺ Ti₁₀", map_script_digits=True) == "Na1+ Ti10"
    with pytest.raises(TypeError):
        normalize_text(None)


def test_normalize_real_mp_texts(mp_texts):
    allowed = set("".join(MATSCIBERT_CHAR_MAP.values())) | {" ", "\n"}
    descriptions = list(mp_texts["description"])
    assert any("Å" in d for d in descriptions) and any("\u0305" in d for d in descriptions)
    for raw in descriptions:
        out = normalize_text(raw)
        assert set(out) <= allowed
        assert not {"Å", "\u0305", "₂", "⁺", "–"} & set(out)
        assert normalize_text(out) == out  # idempotent: the table's outputs map to themselves
        assert len(out) >= len(raw) - raw.count("\u0305")  # only combining marks are removed
    first = normalize_text(descriptions[0])
    assert first.startswith("Na3Bi(P2O7)2 crystallizes in the triclinic P1 space group.")
    assert "Na-O bond distances ranging from 2.30-2.41 A." in first


# ---------------------------------------------------------------------------------------------
# template description


def test_template_nacl_hand_checked():
    a = 5.64
    text = template_description(nacl(a))
    assert text.startswith("NaCl crystallizes in the cubic Fm-3m space group (number 225).")
    assert "a = 5.64 Å, b = 5.64 Å, c = 5.64 Å, α = 90.00°, β = 90.00°, γ = 90.00°" in text
    assert "contains 8 sites" in text
    mass = 4 * (22.98976928 + 35.453)  # g/mol in the conventional cell
    density = mass / AVOGADRO / (a * 1e-8) ** 3
    assert f"density of {density:.2f} g/cm^3" in text
    assert "Na-Cl bond lengths are 2.82 Å." in text  # a / 2
    assert "Na-Na" not in text and "Cl-Cl" not in text  # second neighbours (a/√2) are not bonds
    assert template_description(nacl(a)) == text  # deterministic


def test_nearest_neighbor_bonds_hand_cases():
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    bonds = nearest_neighbor_bonds(cscl)
    assert list(bonds) == [("Cs", "Cl")]
    np.testing.assert_allclose(bonds[("Cs", "Cl")], [4.12 * math.sqrt(3) / 2] * 2, rtol=1e-9)
    # Orthorhombic single-atom cell: neighbours at 3.0 (±a) and 3.2 (±b) are both within 10 %.
    cu = Structure(Lattice.orthorhombic(3.0, 3.2, 10.0), ["Cu"], [[0, 0, 0]])
    np.testing.assert_allclose(nearest_neighbor_bonds(cu)[("Cu", "Cu")], [3.0, 3.2], rtol=1e-9)
    assert "Cu-Cu bond lengths range from 3.00 to 3.20 Å." in template_description(cu)


def test_disordered_structure_falls_back_to_template():
    text, source = describe_structure(disordered())  # robocrys requested; never imported for this
    assert source == "template"
    assert "cubic Pm-3m space group (number 221)" in text
    assert "disordered" in text
    assert f"Fe-O bond lengths are {2 * math.sqrt(3):.2f} Å." in text
    mass = 0.5 * 55.845 + 0.5 * 58.933195 + 15.9994
    assert f"density of {mass / AVOGADRO / (4.0e-8) ** 3:.2f} g/cm^3" in text


def test_robocrys_errors_fall_back(monkeypatch):
    def broken(structure, mineral_matcher=False, timeout=None):
        raise RuntimeError("No Voronoi neighbors found for site")

    monkeypatch.setattr(text_mod, "robocrys_description", broken)
    text, source = describe_structure(nacl())
    assert source == "template" and text == template_description(nacl())
    with pytest.raises(RecordError, match="record 'mp-x'.*pymatgen Structure"):
        describe_structure("not a structure", record_id="mp-x")


def test_template_on_real_mp_structures(mp_texts):
    rows = mp_texts[(mp_texts["cif"].fillna("") != "")].drop_duplicates("material_id").head(20)
    agree = 0
    for _, row in rows.iterrows():
        s = Structure.from_str(row["cif"], fmt="cif")
        # symprec 0.01 Å is robocrys' own default (StructureCondenser(symprec=0.01)).
        text, source = describe_structure(s, use_robocrys=False, symprec=0.01)
        assert source == "template"
        assert text.startswith(f"{s.composition.reduced_formula} crystallizes in the ")
        system = text.split(" crystallizes in the ")[1].split()[0]
        agree += f"crystallizes in the {system} " in row["description"]
    # The crystal system agrees with Materials Project's robocrystallographer text, except for
    # mp-862916 (cubic in MP; the 6-decimal CIF rebuilt from LLM-Prop's table gives trigonal).
    assert agree >= len(rows) - 1


# ---------------------------------------------------------------------------------------------
# describe_structures: workers and cache


def test_describe_structures_cache_and_workers(tmp_path):
    structures = [nacl(5.64), disordered(), nacl(5.70)]
    ids = ["a", "b", "c"]
    cache = tmp_path / "texts.json"
    serial = describe_structures(structures, ids, use_robocrys=False, cache_path=cache)
    assert serial == [(template_description(s), "template") for s in structures]
    parallel = describe_structures(structures, ids, num_workers=2, use_robocrys=False, chunk_size=1)
    assert parallel == serial
    # Entries come from the cache: edit one and it is returned as stored, not regenerated.
    data = json.loads(cache.read_text())
    assert len(data["entries"]) == 3
    key = text_cache.description_cache_key("b", structures[1], use_robocrys=False)
    data["entries"][key]["text"] = "cached text"
    cache.write_text(json.dumps(data))
    again = describe_structures(structures, ids, use_robocrys=False, cache_path=cache)
    assert again[1] == ("cached text", "template") and again[0] == serial[0]
    # A changed structure (or id) is a new key and is described afresh.
    moved = nacl(5.80)
    fresh = describe_structures([moved], ["b"], use_robocrys=False, cache_path=cache)
    assert fresh == [(template_description(moved), "template")]
    assert len(json.loads(cache.read_text())["entries"]) == 4
    with pytest.raises(RecordError, match="record 'bad'"):
        describe_structures([nacl(), None], ["ok", "bad"], use_robocrys=False)
    with pytest.raises(ValueError, match="2 structures but 1 ids"):
        describe_structures([nacl(), nacl()], ["x"], use_robocrys=False)


# ---------------------------------------------------------------------------------------------
# robocrys (slow: importing robocrys takes ~7 s; one tiny structure)


@pytest.mark.slow
def test_robocrys_describes_nacl():
    before = np.get_printoptions()
    text, source = describe_structure(nacl(5.69), use_robocrys=True, mineral_matcher=False)
    assert source == "robocrys"
    assert text.startswith("NaCl crystallizes in the cubic Fm-3m space group.")
    assert "octahedra" in text and "2.85 Å" in text
    assert "np.int64" not in text and "np.float64" not in text
    assert np.get_printoptions() == before  # the legacy repr setting is scoped


def test_time_limit_interrupts_slow_work():
    import time

    start = time.perf_counter()
    with pytest.raises(text_mod.DescriptionTimeout, match="more than 0.2 s"):
        with text_mod._time_limit(0.2):
            time.sleep(5)
    assert time.perf_counter() - start < 4
    with text_mod._time_limit(None):  # no limit: runs to completion
        time.sleep(0.01)
