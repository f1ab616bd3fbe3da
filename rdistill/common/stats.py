"""Mean and spread over seeds, one definition for every table rdistill prints.

The spread is the POPULATION standard deviation (ddof 0, `numpy.std`'s default): what the
dataset-distillation papers report (DC/DSA/IDC and the minimax reference compute `np.std` over their
runs), so our ± sits beside the published ones (SPEC.md sections 6 and 7) on the same footing. Every
table labels it with STD_LABEL.
"""

from __future__ import annotations

import math

STD_LABEL = "std over seeds (population, ddof 0, as the papers report)"


def mean_std(values) -> tuple[float, float]:
    """(mean, population std) of a non-empty sequence."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def format_mean_std(values, digits: int = 1) -> str:
    """"m ± s" (population std), or "m" for a single value."""
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
