"""Train and export the demo models shipped in `checkpoints/` (clvae and gaugan_vae on SynthScenes).

    python scripts/train_demo_models.py                 # both, in parallel, one CPU thread each
    python scripts/train_demo_models.py --steps 3000 --variants clvae

Each model is trained with `python -m smis.train` (the project's own command), exported with fp16
storage to `checkpoints/synthscenes_<variant>.pt`, and described by a JSON beside it recording the
exact command, data seed, steps, wall time and device.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def command(variant: str, steps: int, batch: int, threads: int, run_dir: Path, data_seed: int) -> list[str]:
    return [sys.executable, "-m", "smis.train", "--variant", variant, "--preset", "synthscenes", "--steps", str(steps),
            "--batch-size", str(batch), "--data-length", "4000", "--data-seed", str(data_seed), "--run-dir", str(run_dir),
            "--threads", str(threads), "--ckpt-every", "250", "--image-every", "500", "--log-every", "25", "--no-progress"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["clvae", "gaugan_vae"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--runs", default="outputs/runs", help="where the training runs go")
    p.add_argument("--out", default="checkpoints", help="where the exported models go")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    import torch

    from smis.train import export_model
    from smis.utils import safe_load

    procs, t0 = {}, time.time()
    for v in a.variants:
        run_dir = ROOT / a.runs / f"demo_{v}"
        cmd = command(v, a.steps, a.batch_size, a.threads, run_dir.relative_to(ROOT), a.data_seed) + (["--resume"] if a.resume else [])
        log = open(ROOT / a.runs / f"demo_{v}.log", "a") if (ROOT / a.runs).mkdir(parents=True, exist_ok=True) is None else None
        procs[v] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), cmd, run_dir, time.time())
        print(f"[demo] training {v}: {' '.join(cmd[1:])}", flush=True)
    failed = []
    for v, (proc, cmd, run_dir, start) in procs.items():
        if proc.wait() != 0:
            failed.append(v)
            continue
        ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
        wall = safe_load(ckpts[-1]).get("wall_time_s") or time.time() - start
        cfg = json.loads((run_dir / "config.json").read_text())
        provenance = {
            "command": "python " + " ".join(cmd[1:]).replace(str(ROOT) + "/", ""),
            "exported_by": "python scripts/train_demo_models.py " + " ".join(argv or sys.argv[1:]),
            "variant": v, "dataset": "synthscenes (generated on the fly)", "data_seed": a.data_seed,
            "steps": int(cfg["resolved"]["total_steps"]), "batch_size": a.batch_size, "wall_time_s": round(wall, 1),
            "device": cfg["resolved"]["device_name"], "torch": str(torch.__version__), "python": platform.python_version(),
            "perceptual": cfg["resolved"]["perceptual"], "params": cfg["resolved"]["params"],
            "storage": "fp16 (loaded back as fp32)",
        }
        out = ROOT / a.out / f"synthscenes_{v}.pt"
        export_model(ckpts[-1], out, half=True, extra={"provenance": provenance})
        (out.with_suffix(".json")).write_text(json.dumps(provenance, indent=2) + "\n")
        print(f"[demo] {v}: {provenance['steps']} steps in {wall / 60:.1f} min -> {out.relative_to(ROOT)} "
              f"({out.stat().st_size / 2**20:.1f} MiB)", flush=True)
    print(f"[demo] all done in {(time.time() - t0) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
