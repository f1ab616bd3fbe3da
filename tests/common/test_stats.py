import statistics

import pytest

from rdistill.common.stats import format_mean_std, mean_std


def test_mean_std_is_the_population_std():
    m, s = mean_std([70.0, 72.0, 77.0])
    assert m == pytest.approx(73.0)
    assert s == pytest.approx(statistics.pstdev([70.0, 72.0, 77.0]))


def test_one_value_has_no_spread_and_no_values_is_an_error():
    assert mean_std([5.0]) == (5.0, 0.0)
    assert format_mean_std([5.0]) == "5.0"
    assert format_mean_std([1.0, 3.0]) == "2.0 ± 1.0"
    with pytest.raises(ValueError):
        mean_std([])
