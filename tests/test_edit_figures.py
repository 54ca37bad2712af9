"""smis.edit_figures: the editing figures (Figs. 12-15) on an untrained seeded clvae: files, sizes, what they return."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from smis import edit_figures, editing
from smis.data import make_dataset
from smis.models import load_or_untrained

TILE, PAD = edit_figures.MIN_TILE, 2


@pytest.fixture(scope="module")
def encoded():
    nets = load_or_untrained("", "clvae", seed=0)
    test = make_dataset("synthscenes", None, "test", size=nets.preset.image_size, length=10)
    images, labels, codes = editing.encode_dataset(nets, test)
    return nets, test.info, images, labels, codes


def raw_size(path):
    """(columns, rows) of tiles of a figure's bare grid."""
    w, h = Image.open(path.with_name(path.stem + "_raw.png")).size
    return (w + PAD) // (TILE + PAD), (h + PAD) // (TILE + PAD)


def test_diverse_and_style_figures(encoded, tmp_path):
    nets, info, images, labels, codes = encoded
    edit_figures.diverse_samples_figure(nets, images, labels, info.palette, 3, 0, tmp_path / "d.png", n_masks=2)
    assert raw_size(tmp_path / "d.png") == (2 + 3, 2) and (tmp_path / "d.png").stat().st_size > 1000
    shared = edit_figures.style_guided_figure(nets, images, labels, codes, info.palette, info.class_names, [3, 4],
                                              [6, 7], 0, tmp_path / "s.png")
    assert raw_size(tmp_path / "s.png") == (1 + 2, 1 + 2 + 1)     # reference column; masks, references, deepest only
    for t, names in zip([3, 4], shared):
        want = set(torch.unique(labels[t]).tolist()) & set(torch.unique(labels[6]).tolist())
        assert sorted(names) == sorted(info.class_names[c] for c in want)


def test_object_material_and_layer_figures(encoded, tmp_path):
    nets, info, images, labels, codes = encoded
    names = info.class_names
    edited = edit_figures.object_editing_figure(nets, images, labels, codes, names, 0, 0, tmp_path / "o.png",
                                                n_classes=2, n_edits=3)
    sizes = {c: int((labels[0] == c).sum()) for c in torch.unique(labels[0]).tolist()}
    assert edited == sorted(sizes, key=lambda c: -sizes[c])[:2] and raw_size(tmp_path / "o.png") == (2 + 3, 2 + 1)
    other = edit_figures.material_editing_figure(nets, labels, codes, editing.principal_directions(codes, k=1), names,
                                                 0, edited[0], tmp_path / "m.png", steps=5)
    assert other == next(i for i in range(1, len(labels)) if (labels[i] == edited[0]).any())
    assert raw_size(tmp_path / "m.png") == (5, 3)
    L = len(nets.spec.layers)
    edit_figures.layerwise_resampling_figure(nets, labels, codes, names, 0, edited[0], 0, tmp_path / "l.png", draws=2)
    assert raw_size(tmp_path / "l.png") == (L, 2)
    alone = labels[:2].clone()                                  # photo 1 without the edited class
    alone[1][alone[1] == edited[0]] = (edited[0] + 1) % len(names)
    with pytest.raises(ValueError, match="no photo but 0 holds class"):
        edit_figures.material_editing_figure(nets, alone, codes[:2], editing.principal_directions(codes, k=1), names,
                                             0, edited[0], tmp_path / "x.png")
