"""Score every kept checkpoint of the demo training runs (smis.curves) and draw the training curves.

    python scripts/eval_curves.py                                   # outputs/runs/demo_* -> checkpoints/ + docs/
    python scripts/eval_curves.py --runs /elsewhere/runs --n 64 --k 4

Rows already in the JSON (same variant, step, masks, K) are kept, so rerunning after more training only
scores the new checkpoints; kept rows of class-code models that lack the latent-layer diagnostics (active units,
classes visible: smis.diagnostics) get them from their checkpoint when the run still holds it (cheap: no sampling).
Writes checkpoints/synthscenes_curves.json (rows + the command + the machine)
and docs/training_curves.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.curves import checkpoint_scores, curves_figure, plateau_table, real_scores, run_object_factor  # noqa: E402
from smis.utils import cpu_model, device_name  # noqa: E402
from smis.utils import atomic_write_json, resolve  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="outputs/runs", help="folder holding demo_<variant> run folders")
    p.add_argument("--n", type=int, default=64, help="SynthScenes test masks")
    p.add_argument("--k", type=int, default=4, help="prior samples per mask")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where the checkpoints are scored: cpu, cuda, ... (recorded)")
    p.add_argument("--out", default="checkpoints/synthscenes_curves.json")
    p.add_argument("--figure", default="docs/training_curves.png")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    runs = {d.name[len("demo_"):]: d for d in sorted(resolve(a.runs).glob("demo_*")) if d.is_dir()}
    if not runs:
        raise SystemExit(f"no demo_<variant> run folders under {resolve(a.runs)}; train them with "
                         "scripts/train_demo_models.py")
    out = resolve(a.out)
    done = None
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("masks") == a.n and old.get("k") == a.k:
            done = pd.DataFrame(old["rows"])
    t0 = time.time()
    device = torch.device(a.device)
    rows = checkpoint_scores(runs, a.n, a.k, done=done, device=device)
    real = real_scores(a.n, tuple(rows["size"].iloc[0]) if "size" in rows else (64, 64),
                       object_factor=any(run_object_factor(r) for r in runs.values()))

    cpu = cpu_model()
    atomic_write_json({"command": "python scripts/eval_curves.py " + " ".join(argv), "masks": a.n, "k": a.k,
                       "device": device_name(device), "cpu": cpu, "torch": str(torch.__version__),
                       "seconds_this_call": round(time.time() - t0, 1), "real": real, "rows": rows.to_dict("records"),
                       "plateau": plateau_table(rows).reset_index().to_dict("records")}, out)
    curves_figure(rows, resolve(a.figure), real=real)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        shown = [c for c in rows.columns if c not in ("lpips", "fd_name", "masks", "k")
                 and not c.startswith(("active ", "classes visible"))]          # the diagnostics: in the JSON
        print(rows[shown].round(3).to_string(index=False))
    print(f"wrote {out} and {a.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
