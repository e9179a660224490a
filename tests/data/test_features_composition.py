"""Composition features: order, fractions, padding, input types and errors."""

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from mmjax.features import composition_features


def test_formula_order_and_fractions():
    f = composition_features("Fe2O3")
    np.testing.assert_array_equal(f["atomic_numbers"], [8, 26])  # O (0.6) before Fe (0.4)
    np.testing.assert_allclose(f["fractions"], [0.6, 0.4], rtol=1e-6)
    assert f["mask"].all() and f["atomic_numbers"].dtype == np.int32 and f["fractions"].dtype == np.float32
    tie = composition_features("ClNa")  # equal fractions: ascending Z
    np.testing.assert_array_equal(tie["atomic_numbers"], [11, 17])


def test_structure_and_oxidation_states_and_padding():
    s = Structure(Lattice.cubic(4.0), ["Sr", "Ti", "O", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    f = composition_features(s, max_elements=5)
    np.testing.assert_array_equal(f["atomic_numbers"], [8, 22, 38, 0, 0])
    np.testing.assert_allclose(f["fractions"], [0.6, 0.2, 0.2, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(f["mask"], [True, True, True, False, False])
    assert f["fractions"][f["mask"]].sum() == pytest.approx(1.0)
    ox = composition_features(Composition({"Fe3+": 2, "O2-": 3}))
    np.testing.assert_array_equal(ox["atomic_numbers"], [8, 26])


def test_fractions_sum_to_one_on_real_formulas(shared_data):
    import pandas as pd

    df = pd.read_csv(shared_data / "crabnet_benchmarks" / "aflow__Egap" / "val.csv.gz", nrows=200)
    for formula in df.formula:
        f = composition_features(formula)
        amounts = Composition(formula).get_el_amt_dict()
        assert len(f["atomic_numbers"]) == len(amounts)
        assert f["fractions"].sum() == pytest.approx(1.0, abs=1e-6)
        assert (np.diff(f["fractions"]) <= 1e-7).all()  # descending
        total = sum(amounts.values())
        for z, fr in zip(f["atomic_numbers"], f["fractions"]):
            sym = Composition({int(z): 1}).elements[0].symbol
            assert fr == pytest.approx(amounts[sym] / total, rel=1e-6)


def test_errors_name_the_formula():
    with pytest.raises(ValueError, match="LiFePO4.*max_elements=3"):
        composition_features("LiFePO4", max_elements=3)
    with pytest.raises(ValueError, match="Xx2"):
        composition_features("Xx2")
    with pytest.raises(TypeError):
        composition_features(42)
