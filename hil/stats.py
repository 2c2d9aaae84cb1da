"""Small statistics the suites, benchmarks and reports share."""

from __future__ import annotations


def percentile(samples, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sequence; NaN when empty."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1 if q > 0 else 0))
    return s[int(k)]
