"""Are two training runs of the same command the same run? Every logged loss, and every tensor of the checkpoints
both runs wrote (networks and optimiser states), compared bit for bit.

The check behind "same results" for changes that should not move a single float (issue 26: the caches of renders
and perceptual maps, foreach Adam): train the shipped command with the new code and compare it with a run of the
same command, seed and machine made by the old code. A GAN amplifies a difference in the last bit within tens of
steps, so identical losses over hundreds of steps and identical checkpoints mean identical computations.

    python -m smis.train --variant clvae --preset synthscenes --steps 8000 --batch-size 8 --data-length 4000 \\
        --data-seed 0 --seed 1 --threads 1 --ckpt-every 1000 --log-every 25 --no-progress --channels-last \\
        --run-dir /tmp/new_s1                              # stop it once step_00001000.pt is written
    python benchmarks/compare_runs.py --old OLD_RUN --new /tmp/new_s1 --name run_equality_cpu.json
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

TIMING_COLUMNS = ("images_per_s",)          # measurements of speed, not results


def tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint dict / list, by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def compare_losses(old: Path, new: Path) -> dict:
    rows = [{r["step"]: r for r in csv.DictReader(open(run / "losses.csv"))} for run in (old, new)]
    steps = sorted(set(rows[0]) & set(rows[1]), key=int)
    cols = [c for c in rows[1][steps[0]] if c not in TIMING_COLUMNS and c != "step"] if steps else []
    differ = [{"step": int(s), "column": c, "old": rows[0][s].get(c), "new": rows[1][s][c]}
              for s in steps for c in cols if rows[0][s].get(c) != rows[1][s][c]]
    return {"logged_steps_compared": len(steps), "last_step": int(steps[-1]) if steps else None,
            "columns": cols, "cells_compared": len(steps) * len(cols), "cells_differing": len(differ),
            "first_differences": differ[:10]}


def compare_checkpoints(old: Path, new: Path) -> list[dict]:
    out = []
    for ck in sorted((new / "checkpoints").glob("step_*.pt")):
        twin = old / "checkpoints" / ck.name
        if not twin.exists():
            continue
        a, b = (tensors({k: v for k, v in torch.load(p, map_location="cpu", weights_only=True).items()
                         if k in ("G", "E", "D", "opt_g", "opt_d")}) for p in (twin, ck))
        keys = sorted(set(a) | set(b))
        differ = [k for k in keys if k not in a or k not in b or a[k].shape != b[k].shape
                  or not torch.equal(a[k], b[k])]
        out.append({"checkpoint": ck.name, "tensors": len(keys), "differing": len(differ),
                    "first_differing": differ[:10]})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="run folder of the old code")
    p.add_argument("--new", required=True, help="run folder of the new code, same command, seed and machine")
    p.add_argument("--note", default="", help="what the two runs are (stored in the JSON)")
    p.add_argument("--name", default="run_equality_cpu.json", help="JSON name under benchmarks/results/")
    a = p.parse_args(argv)
    from common import machine_info, write_json
    old, new = Path(a.old), Path(a.new)
    for run in (old, new):
        if not (run / "losses.csv").is_file():
            raise SystemExit(f"{run}: no losses.csv; give the folders smis.train wrote (--run-dir)")
    result = {"benchmark": "two training runs of one command compared bit for bit", "note": a.note,
              "old": str(old), "new": str(new), "losses": compare_losses(old, new),
              "checkpoints": compare_checkpoints(old, new), "machine": machine_info(torch.device("cpu"))}
    loss = result["losses"]
    print(f"losses.csv: {loss['logged_steps_compared']} logged steps (to step {loss['last_step']}), "
          f"{loss['cells_compared']} cells, {loss['cells_differing']} differ")
    for c in result["checkpoints"]:
        print(f"{c['checkpoint']}: {c['tensors']} tensors (G, E, D, both Adams), {c['differing']} differ")
    if not result["checkpoints"]:
        print("no checkpoint written by both runs")
    write_json(result, a.name)
    return result


if __name__ == "__main__":
    main()
