"""smis.progress: the bar's final state is what a saved notebook keeps, and a headless run's console sees
each bar's progress, tagged with its notebook."""
from __future__ import annotations

import re

import nbformat
import pytest

from smis import progress as P
from smis.reproduce.runner import run_profile


def test_line_counts_and_closes_once(capfd, monkeypatch):
    monkeypatch.setattr(P, "CONSOLE_INTERVAL", 0.0)                    # every update reaches the console
    bar = P.Progress(range(4), desc="work", console="04_x")
    assert list(bar) == [0, 1, 2, 3] and bar.n == 4 and bar.closed
    bar.close()                                                        # a second close adds nothing
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("[04_x]")]
    assert lines[0].startswith("[04_x] work: " + "." * 20 + " 0/4 (0 %)")
    assert [ln.split(" (")[0].rsplit(" ", 1)[1] for ln in lines] == ["0/4", "1/4", "2/4", "3/4", "4/4"]   # no repeat
    assert lines[-1].startswith("[04_x] work: " + "#" * 20 + " 4/4 (100 %) [00:00]")
    by_hand = P.Progress(total=10, desc="train", console="")
    by_hand.set_postfix(g="1.50")
    by_hand.update_to(5)
    assert by_hand.line().startswith("train: ##########.......... 5/10 (50 %) [00:00<00:00]")
    assert by_hand.line().endswith(" g=1.50")
    assert P.Progress(desc="n", total=None, console="").line().startswith("n: 0 [00:00]")
    with pytest.raises(TypeError, match="no iterable"):
        iter(by_hand).__next__()
    silent = P.Progress(range(3), disable=True, console="04_x")
    assert list(silent) == [0, 1, 2]
    assert "[04_x]" not in capfd.readouterr().err


def test_executed_notebook_keeps_final_state_and_console_sees_progress(tmp_path, capfd):
    """Through `smis.reproduce` (papermill): the saved notebook holds the bar's last line, "13/13", not its
    first; the console gets lines tagged with the notebook's name."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smis", "display_name": "Python (smis)", "language": "python"}
    params = nbformat.v4.new_code_cell('OUT_DIR = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import time\nfrom smis.progress import Progress\n"
        "for i in Progress(range(13), desc='scoring'):\n    time.sleep(0.1)\nprint('after the loop')")]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "97_bar.ipynb")
    out = run_profile("p", out_root=tmp_path / "out", profiles={"p": {"97_bar": {}}},
                      notebook_dir=tmp_path / "nbs", log=lambda *a: None)
    cell = nbformat.read(out / "97_bar.ipynb", as_version=4).cells[-1]
    shown = [o["data"]["text/plain"] for o in cell["outputs"] if o["output_type"] == "display_data"]
    assert len(shown) == 1 and re.fullmatch(r"scoring: #{20} 13/13 \(100 %\) \[00:0[1-9]\]", shown[0]), shown
    assert not any("widget" in k for o in cell["outputs"] for k in o.get("data", {}))
    assert "".join(o.get("text", "") for o in cell["outputs"]) == "after the loop\n"   # nothing else in the cell
    console = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("[97_bar] scoring:")]
    assert " 0/13 (0 %)" in console[0] and " 13/13 (100 %)" in console[-1]
