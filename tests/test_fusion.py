import numpy as np
import pytest

from vfer.fusion import balance_weights, fuse, normalise_rows

A = np.array([[1.0, 2.0], [3.0, 4.0]])
B = np.array([[10.0, 20.0], [30.0, 40.0]])


def test_concatenation_sum_and_product():
    assert fuse([A, B], "concat").tolist() == [[1, 2, 10, 20], [3, 4, 30, 40]]
    assert fuse([A, B], "sum").tolist() == [[11, 22], [33, 44]]
    assert fuse([A, B], "product").tolist() == [[10, 40], [90, 160]]


def test_elementwise_fusion_needs_equal_dimensions():
    with pytest.raises(ValueError, match=r"equal feature dimensions, got \[2, 3\]"):
        fuse([A, np.ones((2, 3))], "sum")
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse([A], "max")


def test_balance_gives_every_block_an_equal_share_of_the_variance():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(50, 4)), rng.normal(size=(50, 100)) * 3
    w = balance_weights([small, large])
    v = [small.var(0).sum(), large.var(0).sum()]
    np.testing.assert_allclose(w, np.sqrt(sum(v) / (2 * np.array(v))))
    shares = [(wi * b).var(0).sum() for wi, b in zip(w, [small, large])]
    np.testing.assert_allclose(shares, [sum(v) / 2] * 2)  # equal, and the total is kept
    assert balance_weights([large]).tolist() == [1.0]
    assert balance_weights([np.ones((5, 3)), small])[0] == 1.0  # a constant block


def test_row_normalisations():
    x = np.array([[3.0, -4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_rows(x, "l2"), [[0.6, -0.8], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_rows(x, "tanh"), np.tanh(x))
    assert normalise_rows(x, "none") is x
    with pytest.raises(ValueError, match="unknown normalisation 'l1'"):
        normalise_rows(x, "l1")
