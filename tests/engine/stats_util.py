"""A chi-square goodness-of-fit check without scipy (Wilson-Hilferty approximation of the critical value)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable


def chi_square_ok(observed: Counter[Hashable], expected_probs: dict[Hashable, float], z: float = 3.5) -> bool:
    """True unless ``observed`` counts are implausible under ``expected_probs`` (about p < 2e-4).

    Cells expecting fewer than 5 counts are pooled into one, as the test requires.
    """
    total = sum(observed.values())
    stat, pooled_obs, pooled_exp, cells = 0.0, 0.0, 0.0, 0
    for key, prob in expected_probs.items():
        exp = prob * total
        if exp < 5:
            pooled_obs += observed.get(key, 0)
            pooled_exp += exp
            continue
        stat += (observed.get(key, 0) - exp) ** 2 / exp
        cells += 1
    pooled_obs += sum(count for key, count in observed.items() if key not in expected_probs)
    if pooled_exp >= 5:
        stat += (pooled_obs - pooled_exp) ** 2 / pooled_exp
        cells += 1
    elif pooled_obs > 10 + 3 * pooled_exp:
        return False
    df = max(cells - 1, 1)
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat <= critical
