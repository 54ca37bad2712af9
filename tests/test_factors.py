"""smis.factors: SynthScenes factor scoring (colour modes under any tint, texture kinds, style match) on real
and altered SynthScenes images."""
from __future__ import annotations

import numpy as np
import pytest

from smis import factors
from smis.data import synthetic


def test_real_synthscenes_images_are_in_distribution():
    items = [synthetic.generate(i, 64, 0, "test") for i in range(12)]
    images = np.stack([im for im, _, _ in items])
    labels = np.stack([lab for _, lab, _ in items])
    rows = factors.factor_rows(images, labels)
    assert len(rows) > 40
    assert rows["colour_in"].mean() >= 0.95 and rows["texture_in"].mean() >= 0.95
    truth = np.array([items[i][2]["classes"][str(c)]["colour_mode"] for i, c in zip(rows["image"], rows["class"])])
    assert (rows["colour_mode"].to_numpy() == truth).mean() >= 0.95
    # uniform noise is not a SynthScenes image
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert factors.factor_rows(noise, labels)["colour_in"].mean() < 0.5


def test_fit_colour_modes_sees_through_tint_and_brightness():
    modes = [(c, m) for c, spec in enumerate(synthetic.CLASSES) for m in range(len(spec.colour_modes))]
    cls = np.array([c for c, _ in modes])
    base = np.array([synthetic.CLASSES[c].colour_modes[m] for c, m in modes])
    tinted = base * synthetic.tint(0.1) * 0.8
    mode, dist = factors.fit_colour_modes(tinted, cls)
    assert (mode == np.array([m for _, m in modes])).all() and dist.max() < 0.02
    mode, dist = factors.fit_colour_modes(np.full_like(base, 0.5) + [0.4, -0.4, 0.0], cls)  # magenta-green: nobody's
    assert (dist > factors.COLOUR_TOLERANCE).mean() > 0.8


def test_style_match_ignores_the_global_factor_and_sees_other_factors():
    image, label, rec = synthetic.generate(3, 64, 0, "test")
    relit = dict(rec, **{"global": {"time_of_day": 0.9, "tint": list(synthetic.tint(0.9)), "brightness": 0.75},
                         "noise_seed": rec["noise_seed"] + 1})
    m = factors.style_match(synthetic.render(label, relit)[None], label[None], image[None], label[None])
    assert len(m) >= 4 and m["colour_match"].all() and m["texture_match"].mean() >= 0.75
    other = synthetic.sample_factors(np.random.default_rng(7), sorted(int(k) for k in rec["classes"]), 64, 64)
    next_mode = {c: (rec["classes"][c]["colour_mode"] + 1) % len(synthetic.CLASSES[int(c)].colour_modes)
                 for c in other["classes"]}
    swapped = {c: dict(o, colour_mode=next_mode[c], colour=list(synthetic.CLASSES[int(c)].colour_modes[next_mode[c]]))
               for c, o in other["classes"].items()}
    changed = synthetic.render(label, dict(rec, classes=swapped))
    assert factors.style_match(changed[None], label[None], image[None], label[None])["colour_match"].mean() <= 0.2


def test_factor_rows_of_images_without_regions_is_an_empty_table_and_bad_input_is_named():
    empty = factors.factor_rows(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4), np.int64))   # < 48 pixels
    assert len(empty) == 0 and list(empty.columns) == factors.COLUMNS
    with pytest.raises(ValueError, match="to_uint8"):
        factors.factor_rows(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8), np.int64))
