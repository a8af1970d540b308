import numpy as np
import pytest

from vfer.fusion import fuse

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
