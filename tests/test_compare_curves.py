"""benchmarks/compare_precision_curves.py: the permutation test behind issue 26's seed comparisons, paired, pooled."""
from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

import pytest

from smis.curves import SCORES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compare_precision_curves as cpc  # noqa: E402


def write_curve(path: Path, fd_by_step: dict[int, float]) -> str:
    """An eval_curves JSON of one clvae run whose scores are all `fd` at each step."""
    rows = [{"variant": "clvae", "step": step, **{s: fd for s in SCORES}} for step, fd in fd_by_step.items()]
    path.write_text(json.dumps({"command": f"python scripts/eval_curves.py --out {path.name}", "rows": rows}))
    return str(path)


def test_permutation_test_counts_labellings_as_extreme_as_observed():
    fp32, fast = [1.0, 2.0, 3.0], [10.0, 11.0]
    r = cpc.permutation_test(fp32, fast)
    assert r["labellings"] == 10 and r["difference"] == pytest.approx(8.5)
    pooled = fp32 + fast                                            # brute force, independently of the function
    stats = [statistics.fmean([pooled[i] for i in pick]) - statistics.fmean([v for i, v in enumerate(pooled)
                                                                            if i not in pick])
             for pick in itertools.combinations(range(5), 2)]
    assert r["p"] == pytest.approx(sum(abs(t) >= 8.5 - 1e-12 for t in stats) / 10) == pytest.approx(0.1)
    assert r["difference_in_fp32_sds"] == pytest.approx(8.5 / statistics.stdev(fp32))


def test_unpaired_pools_more_candidate_runs_than_references(tmp_path):
    """--unpaired: groups without matching seeds (five candidate runs against three references): the permutation
    tests over all C(8, 5) labellings, no same-seed gap. Paired mode refuses more candidates than references."""
    ref = [write_curve(tmp_path / f"ref{i}.json", {1000: 100.0 + i, 2000: 90.0 + i}) for i in range(3)]
    cand = [write_curve(tmp_path / f"c{i}.json", {1000: 120.0 + i, 2000: 110.0 + i}) for i in range(5)]
    with pytest.raises(SystemExit, match="--unpaired"):
        cpc.main(["--fp32", *ref, "--fast", *cand, "--out", str(tmp_path / "paired.json")])
    r = cpc.main(["--fp32", *ref, "--fast", *cand, "--unpaired", "--out", str(tmp_path / "pooled.json")])
    fd = r["scores"]["FD"]
    assert fd["mean_gap"] is None and fd["within_noise"] is None and fd["steps"] == [1000, 2000]
    last = fd["permutation_last_checkpoint"]
    assert last["labellings"] == 56 and last["difference"] == pytest.approx(112.0 - 91.0)
    assert last["p"] == pytest.approx(1 / 56)          # only the observed split is that extreme (one-sided gap)
    saved = json.loads((tmp_path / "pooled.json").read_text())
    assert saved["paired"] is False and len(saved["fast_jsons"]) == 5
