"""The GPU scripts' smoke modes on the CPU: device minutes are few and lent by chance, so a script must not break
on its first real run. Each test runs a script end to end with tiny networks and checks the files it returns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from smis.curves import SCORES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_precision_128_smoke(tmp_path):
    """benchmarks/gpu_precision_128.sh (issue 26, item 3): fp32 and bf16 clvae at 128x128, two seeds each, trained,
    scored at every CKPT step and compared; everything packed into $OUT."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "SMOKE": "1", "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(out)}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_precision_128.sh")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["precision128.log", "precision128.tar.gz"]
    res = tmp_path / "res"
    with tarfile.open(out / "precision128.tar.gz") as tar:
        tar.extractall(res, filter="data")
    cmp = json.loads((res / "precision_curves_128_cpu.json").read_text())
    assert set(cmp["scores"]) == set(SCORES)
    for s in SCORES:
        assert cmp["scores"][s]["steps"] == [2, 4]                  # the CKPT grid of the 4-step smoke schedule
        assert len(cmp["scores"][s]["fp32"]) == len(cmp["scores"][s]["fast"]) == 2
    assert cmp["machine"]["device"].startswith("CPU")
    for prec in ("fp32", "bf16"):
        for seed in (0, 1):
            curves = json.loads((res / f"curves128_{prec}_s{seed}.json").read_text())
            assert curves["device"].startswith("CPU") and "--device cpu" in curves["command"]
            assert [row["step"] for row in curves["rows"]] == [2, 4]   # the runs' other checkpoints: not scored
            config = (res / f"train_{prec}_s{seed}.log").read_text()
            assert "clvae on synthscenes" in config
    log = (out / "precision128.log").read_text()
    assert "--precision bf16" in log and "image_size=[128,128]" in log
