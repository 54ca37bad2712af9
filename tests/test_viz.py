"""smis.viz's figures: what they draw, read back from the matplotlib figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from smis.viz import per_class_figure


def test_per_class_figure_draws_one_bar_per_class_and_system_most_held_first(tmp_path):
    table = pd.DataFrame({"a: div": [0.1, 0.2, 0.3, 0.4], "b: div": [0.5, 0.6, 0.7, 0.8], "masks": [1, 9, 3, 9]},
                         index=pd.Index(["sky", "box", "wall", "pole"], name="class"))
    fig = per_class_figure(table, {"a": "a: div", "b": "b: div"}, "diversity (x)", tmp_path / "bars.png", 3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["box", "pole", "wall"]   # by masks, stable, at most 3
    assert ax.get_ylabel() == "diversity (x)" and [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.2, 0.4, 0.3, 0.6, 0.8, 0.7])                       # system a's bars, then b's
    assert Image.open(tmp_path / "bars.png").size[0] > 300
