"""The hot path's shortcuts give exactly what the general computation gives.

Each shortcut is checked against numpy's or scipy's own answer on data
hypothesis draws (ties, constant rows, huge and tiny values, NaN and
infinities), since a detector whose decision moved by one ulp would no
longer replay alike.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream.detectors.base import row_medians

finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, width=64)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda cols: hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.just(cols)), elements=finite)
    )
)
def test_row_medians_equal_numpys_median_bit_for_bit(rows):
    assert np.array_equal(row_medians(rows), np.median(rows, axis=1))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 10), st.integers(1, 12)), elements=any_float))
def test_row_medians_agree_with_numpy_on_nan_and_infinities(rows):
    assert np.array_equal(row_medians(rows), np.median(rows, axis=1), equal_nan=True)


def test_row_medians_of_a_sliding_view_of_ties():
    x = np.repeat([1.0, 2.0, 2.0, 3.0], 10)
    view = np.lib.stride_tricks.sliding_window_view(x, 20)[::3]
    assert np.array_equal(row_medians(view), np.median(view, axis=1))
