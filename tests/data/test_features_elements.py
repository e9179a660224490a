"""Element tables: CGCNN 92-d layout checked on hand-computed elements; one-hot table."""

import numpy as np
import pytest

from mmjax.data.features.elements import CGCNN_BLOCKS, bin_index
from mmjax.features import element_features

OFFSETS = dict(zip([n for n, _ in CGCNN_BLOCKS], np.cumsum([0] + [w for _, w in CGCNN_BLOCKS])[:-1]))


@pytest.fixture(scope="module")
def cgcnn():
    return element_features("cgcnn92")


def test_shape_padding_row_and_one_hot_blocks(cgcnn):
    assert cgcnn.shape == (101, 92) and cgcnn.dtype == np.float32
    assert not cgcnn[0].any()
    for z in range(1, 101):
        for name, width in CGCNN_BLOCKS:
            block = cgcnn[z, OFFSETS[name]:OFFSETS[name] + width]
            assert block.sum() <= 1.0
        # group, period, valence and block are always known
        for name in ("group", "period", "valence", "block"):
            assert cgcnn[z, OFFSETS[name]:OFFSETS[name] + dict(CGCNN_BLOCKS)[name]].sum() == 1.0


def hot(row, name):
    width = dict(CGCNN_BLOCKS)[name]
    idx = np.nonzero(row[OFFSETS[name]:OFFSETS[name] + width])[0]
    return int(idx[0]) if len(idx) else None


def test_hand_computed_elements(cgcnn):
    # H: group 1, period 1, EN 2.20 -> bin floor(1.70 / 0.35) = 4, valence 1, ln(13.598 eV) = 2.610
    # -> bin floor(1.310 / 0.2) = 6, EA 0.754 eV -> bin floor(3.754 / 0.67) = 5, s block.
    h = cgcnn[1]
    assert (hot(h, "group"), hot(h, "period"), hot(h, "electronegativity")) == (1, 0, 4)
    assert (hot(h, "valence"), hot(h, "ionization_energy"), hot(h, "electron_affinity"), hot(h, "block")) == (0, 6, 5, 0)
    # Fe: group 8, period 4, EN 1.83 -> bin 3, 8 valence electrons (3d6 4s2), d block,
    # ln(7.90 eV) = 2.067 -> bin 3, molar volume 7.09 cm³/mol: ln = 1.959 -> bin 1.
    fe = cgcnn[26]
    assert (hot(fe, "group"), hot(fe, "period"), hot(fe, "electronegativity"), hot(fe, "valence")) == (8, 3, 3, 7)
    assert (hot(fe, "block"), hot(fe, "ionization_energy"), hot(fe, "atomic_volume")) == (2, 3, 1)
    # O: group 16 -> 6 valence electrons, p block; Ce (f block): CGCNN's group column 0, 2 valence electrons.
    assert (hot(cgcnn[8], "group"), hot(cgcnn[8], "valence"), hot(cgcnn[8], "block")) == (16, 5, 1)
    assert (hot(cgcnn[58], "group"), hot(cgcnn[58], "valence"), hot(cgcnn[58], "block")) == (0, 1, 3)
    # noble gas Ne: no Pauling electronegativity -> empty block
    assert hot(cgcnn[10], "electronegativity") is None


def test_bin_index_clips():
    assert bin_index(0.1, 0.5, 4.0) == 0 and bin_index(9.0, 0.5, 4.0) == 9
    assert bin_index(0.85, 0.5, 4.0) == 1 and bin_index(3.99, 0.5, 4.0) == 9


def test_onehot_table_and_errors():
    t = element_features("onehot")
    assert t.shape == (101, 100) and not t[0].any()
    np.testing.assert_array_equal(np.argmax(t[1:], axis=1), np.arange(100))
    np.testing.assert_array_equal(t.sum(1)[1:], 1.0)
    t[5, 0] = 7.0  # a copy: the cached table is unchanged
    assert element_features("onehot")[5, 0] == 0.0
    with pytest.raises(ValueError, match="unknown element table 'no_such_table'"):
        element_features("no_such_table")
