"""What each system costs notebook 04 of the demo (issue 21: the new rows may add at most 90 s to the demo):
per model, the prior evaluation at the demo's settings (100 masks, K = 20, per-class diversity, factors, FD,
mask fidelity) and style-guided synthesis (guided and prior, 100 pairs; skipped without an encoder), plus
the statements of smis.comparison; wall seconds and this process's CPU seconds (less disturbed by a loaded
machine than wall time, with one torch thread exactly so).

    python benchmarks/bench_demo_systems.py                                    # the demo's six shipped systems
    python benchmarks/bench_demo_systems.py --models cimle:/tmp/cimle.pt --threads 1 --name demo_systems_x.json

Setup (models, test set, LPIPS, FD statistics of the real images, segmenter) is `smis.study.load_study`, as in
the notebook, and is not counted. Writes benchmarks/results/NAME with the machine (CPU model, load).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common import machine_info, write_json

from smis import comparison as cmp
from smis import evaluate as ev
from smis.capabilities import capabilities
from smis.reproduce.profiles import DEMO_MODELS, DEMO_SYSTEMS
from smis.study import load_study


def timed(fn):
    """(result, wall s, CPU s of this process) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEMO_SYSTEMS, help="NAME:SOURCE,... (default: the demo's notebook 04)")
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--n-style", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--name", default="demo_systems_cpu.json", help="file under benchmarks/results/")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    study = load_study(a.models, "synthscenes", "", "test", a.n_test, 0, "auto", "auto", "auto", "cpu", 64)
    options = ev.PriorOptions(k=a.k, seed=0, masks_per_batch=8, chunk=64, per_class=True, factors=True, keep=4)
    targets = study.indices[:a.n_style]
    refs = list(np.roll(np.array(targets), 1))
    rows, results = {}, {}
    for name, nets in study.models.items():
        results[name], wall, cpu = timed(lambda: ev.evaluate_prior(nets, study.dataset, study.indices, study.metric,
                                                                   options, study.fd_real, study.segmenter,
                                                                   progress=False))
        row = {"prior_wall_s": wall, "prior_cpu_s": cpu, "style_wall_s": 0.0, "style_cpu_s": 0.0}
        if capabilities(nets.variant)["style-guided synthesis"] and a.n_style:
            _, w, c = timed(lambda: [ev.evaluate_style(nets, study.dataset, targets, refs, 0, g, 64, progress=False)
                                     for g in (True, False)])
            row.update(style_wall_s=w, style_cpu_s=c)
        row["total_wall_s"] = row["prior_wall_s"] + row["style_wall_s"]
        row["total_cpu_s"] = row["prior_cpu_s"] + row["style_cpu_s"]
        rows[name] = row
        print(f"{name:<18} prior {wall:6.1f} s wall {cpu:6.1f} s CPU; style {row['style_wall_s']:6.1f} s wall "
              f"{row['style_cpu_s']:6.1f} s CPU", flush=True)
    (_, w, c) = timed(lambda: (cmp.systems_vs_reference(results, fd_real=study.fd_real),
                               cmp.class_independence_table(results),
                               cmp.statements(results, cmp.classes_per_mask(study.dataset, study.indices),
                                              fd_real=study.fd_real)))
    old = set(s.split(":", 1)[0] for s in DEMO_MODELS.split(","))
    added = {k: sum(r[k] for n, r in rows.items() if n not in old) for k in ("total_wall_s", "total_cpu_s")}
    added["statements_wall_s"], added["statements_cpu_s"] = w, c
    print(f"systems added to the demo ({', '.join(n for n in rows if n not in old)}): {added['total_wall_s']:.1f} s "
          f"wall, {added['total_cpu_s']:.1f} s CPU; tables and statements {w:.1f} s wall")
    write_json({"benchmark": "notebook 04 cost per system", "command": " ".join(["python", *sys.argv]),
                "machine": machine_info(torch.device("cpu")), "torch_threads": torch.get_num_threads(),
                "n_test": a.n_test, "k": a.k, "n_style": a.n_style, "per_model": rows, "added": added}, a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
