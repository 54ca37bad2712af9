"""Do full trainings in the fast configuration land within fp32's run-to-run noise? The training curves' scores
(`scripts/eval_curves.py`: diversity, FD, colour / texture in class, mask mIoU at every kept checkpoint) of fp32
runs with two or more seeds against runs of the candidate (bf16 autocast + fused Adam) with the same seeds.

    noise = |fp32 seed i - fp32 seed j|        per checkpoint and pair of seeds of the unchanged configuration
    gap   = |fast seed s - fp32 seed s|        per checkpoint and seed (same init, data order and latent noise)

A score is within the noise when its gap, averaged over the checkpoints (and seeds), is at most its noise averaged
over the checkpoints (and pairs); the last checkpoint's values are listed too. A few seeds are a coarse noise
estimate: read the table, not only the verdicts. Writes a JSON with the machine and each run's command.

A permutation test asks the same question as a p-value: each run is summarised by its score's mean over the
checkpoints (and, separately, its last checkpoint); the statistic is mean(fast runs) - mean(fp32 runs); p is the
share of all ways of labelling |fast| of the pooled runs "fast" whose statistic is at least as far from 0 as the
observed one (two-sided, exact: 252 labellings for 5 + 5 runs, so p >= 0.008; 20 for 3 + 3, p >= 0.1). It
ignores the seed pairing (two runs with one seed share the initialisation, not the trajectory).

    python benchmarks/compare_precision_curves.py \\
        --fp32 checkpoints/synthscenes_curves.json runs/curves_fp32_s1.json \\
        --fast runs/curves_bf16_s0.json runs/curves_bf16_s1.json --variant clvae
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from smis.curves import SCORES  # noqa: E402


def curve(path: Path, variant: str) -> dict[int, dict[str, float]]:
    """{step: {score: value}} of `variant`'s rows in an eval_curves JSON."""
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if r["variant"] == variant]
    if not rows:
        raise SystemExit(f"{path}: no rows of variant {variant!r}; score the run with scripts/eval_curves.py first")
    return {int(r["step"]): {s: float(r[s]) for s in SCORES} for r in rows}


def permutation_test(fp32: list[float], fast: list[float]) -> dict:
    """Two-sided exact permutation test of mean(fast) - mean(fp32) over every labelling of the pooled values."""
    pooled, k = fp32 + fast, len(fast)
    observed = statistics.fmean(fast) - statistics.fmean(fp32)
    stats = []
    for pick in itertools.combinations(range(len(pooled)), k):
        chosen = set(pick)
        stats.append(statistics.fmean([pooled[i] for i in pick])
                     - statistics.fmean([v for i, v in enumerate(pooled) if i not in chosen]))
    extreme = sum(abs(t) >= abs(observed) - 1e-12 for t in stats)
    sd = statistics.stdev(fp32) if len(fp32) > 1 else float("nan")
    return {"difference": observed, "p": extreme / len(stats), "labellings": len(stats),
            "fp32_run_sd": sd, "difference_in_fp32_sds": observed / sd if sd > 0 else float("nan")}


def compare(fp32: list[dict], fast: list[dict], paired: bool = True) -> dict:
    """Per score: noise and gap per checkpoint, their means over the checkpoints, the last checkpoint's values.
    paired=False (groups of runs without matching seeds): no gap, so no "within noise" verdict; the permutation
    tests only."""
    steps = sorted(set.intersection(*(set(c) for c in fp32 + fast)))
    if not steps:
        raise SystemExit("the runs share no checkpoint step; evaluate them at the same steps")
    out = {}
    for s in SCORES:
        noise = [abs(a[t][s] - b[t][s]) for a, b in itertools.combinations(fp32, 2) for t in steps]
        gap = [abs(fast[i][t][s] - fp32[i][t][s]) for i in range(len(fast)) for t in steps] if paired else []
        last = steps[-1]
        out[s] = {"steps": steps,
                  "fp32": [[round(c[t][s], 5) for t in steps] for c in fp32],
                  "fast": [[round(c[t][s], 5) for t in steps] for c in fast],
                  "noise_per_checkpoint": [round(v, 5) for v in noise],
                  "gap_per_checkpoint": [round(v, 5) for v in gap],
                  "mean_noise": statistics.fmean(noise), "mean_gap": statistics.fmean(gap) if gap else None,
                  "last_fp32": [c[last][s] for c in fp32], "last_fast": [c[last][s] for c in fast],
                  "within_noise": statistics.fmean(gap) <= statistics.fmean(noise) if gap else None,
                  "permutation_mean_over_checkpoints": permutation_test(
                      [statistics.fmean(c[t][s] for t in steps) for c in fp32],
                      [statistics.fmean(c[t][s] for t in steps) for c in fast]),
                  "permutation_last_checkpoint": permutation_test([c[last][s] for c in fp32],
                                                                  [c[last][s] for c in fast])}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32", nargs="+", required=True, metavar="JSON",
                   help="eval_curves JSONs of fp32 runs, seed 0, seed 1, ... (two at least)")
    p.add_argument("--fast", nargs="+", required=True, metavar="JSON",
                   help="eval_curves JSONs of the candidate, seed 0, seed 1, ... (at most as many as --fp32)")
    p.add_argument("--unpaired", action="store_true",
                   help="the two groups' seeds do not match (e.g. pooled configurations): any number of --fast runs, "
                        "permutation tests only (no same-seed gap)")
    p.add_argument("--variant", default="clvae")
    p.add_argument("--device", default="cpu", help="the device the runs trained and were scored on (recorded)")
    p.add_argument("--out", default=str(HERE / "results" / "precision_curves_cpu.json"))
    a = p.parse_args(argv)
    from common import machine_info, pick_device
    from smis.utils import atomic_write_json
    if len(a.fp32) < 2 or (len(a.fast) > len(a.fp32) and not a.unpaired):
        raise SystemExit("give two fp32 runs at least (--fp32 seed 0, seed 1, ...) and at most as many --fast runs, "
                         "in the same seed order (or --unpaired)")
    fp32 = [curve(Path(f), a.variant) for f in a.fp32]
    fast = [curve(Path(f), a.variant) for f in a.fast]
    rows = compare(fp32, fast, paired=not a.unpaired)
    result = {"benchmark": "training curves' scores: fast configuration vs fp32, against fp32's seed noise",
              "variant": a.variant, "paired": not a.unpaired, "fp32_jsons": a.fp32, "fast_jsons": a.fast,
              "commands": {f: json.loads(Path(f).read_text()).get("command") for f in a.fp32 + a.fast},
              "scores": rows, "machine": machine_info(pick_device(a.device))}
    atomic_write_json(result, a.out)
    print(f"{a.variant}: mean over checkpoints {rows[SCORES[0]]['steps']} of |fp32 si - fp32 sj| (noise) and of "
          "|fast - fp32| at the same seed (gap)")
    print("| score | noise | gap | within noise | last: fp32 seeds | last: fast seeds |")
    print("|---|---|---|---|---|---|")
    for s, r in rows.items():
        verdict = "-" if r["within_noise"] is None else "yes" if r["within_noise"] else "NO"
        gap = "-" if r["mean_gap"] is None else f"{r['mean_gap']:.4g}"
        print(f"| {s} | {r['mean_noise']:.4g} | {gap} | {verdict} | "
              + ", ".join(f"{v:.4g}" for v in r["last_fp32"]) + " | " + ", ".join(f"{v:.4g}" for v in r["last_fast"])
              + " |")
    print("\npermutation test, fast - fp32 over runs (exact, two-sided):")
    print("| score | mean over checkpoints: difference (fp32 run SDs), p | last checkpoint: difference (SDs), p |")
    print("|---|---|---|")
    for s, r in rows.items():
        m, last = r["permutation_mean_over_checkpoints"], r["permutation_last_checkpoint"]
        print(f"| {s} | {m['difference']:+.4g} ({m['difference_in_fp32_sds']:+.2f}), p = {m['p']:.3f} | "
              f"{last['difference']:+.4g} ({last['difference_in_fp32_sds']:+.2f}), p = {last['p']:.3f} |")
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
