"""Benchmarks behind ``hil bench``: each prints ``key: value`` lines (figures and ratios)."""
