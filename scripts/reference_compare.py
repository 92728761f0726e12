#!/usr/bin/env python3
"""Reference values for vlmtest's paired comparison statistics, computed with scipy and statsmodels.

Writes fixtures/compare/expected.json: for stored discordant-pair counts (fixed, broken), the exact
McNemar p-value from statsmodels' `mcnemar(table, exact=True)` and scipy's
`binomtest(min, fixed + broken, 0.5)` (two-sided); and numpy's linear-interpolation percentiles of
stored samples. The Rust test `compare_reference` asserts vlmtest's numbers equal these to 1e-12.

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-reference.txt
    .venv/bin/python scripts/reference_compare.py
"""

import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "compare" / "expected.json"

PAIRS = [
    (0, 0), (1, 0), (0, 1), (3, 3), (0, 6), (2, 9), (9, 2), (10, 25), (40, 61),
    (117, 150), (500, 460), (1, 30), (0, 40), (1200, 1290), (4000, 4100),
]


def main():
    mc = []
    for fixed, broken in PAIRS:
        # Rows: A pass / A fail; columns: B pass / B fail. Off-diagonal: broken (A pass, B fail)
        # and fixed (A fail, B pass); the diagonal does not enter the exact test.
        table = [[7, broken], [fixed, 5]]
        p_sm = float(mcnemar(table, exact=True).pvalue)
        n = fixed + broken
        p_sp = 1.0 if n == 0 else float(binomtest(min(fixed, broken), n, 0.5).pvalue)
        mc.append({"fixed": fixed, "broken": broken, "statsmodels": p_sm, "scipy": p_sp})
    rng = np.random.default_rng(20261207)
    quant = []
    for size in [1, 2, 5, 40, 2000]:
        sample = rng.normal(size=size).tolist()
        q = np.quantile(np.array(sample), [0.025, 0.975]).tolist()
        quant.append({"sample": sample, "q025": q[0], "q975": q[1]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"mcnemar": mc, "quantiles": quant}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
