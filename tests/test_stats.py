"""hil.stats: the small statistics the suites, benchmarks and reports share."""

from hil.stats import percentile


def test_percentile_nearest_rank():
    assert percentile(range(1, 101), 50) == 50
    assert percentile(range(1, 101), 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([], 50) != percentile([], 50)  # NaN
