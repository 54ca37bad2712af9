"""The editor's handlers, driven from Python, give exactly the images of the pure smis.editing functions."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from smis import editing, sampling
from smis.config import get_preset
from smis.diagnostics import LayerDiagnostics, layer_diagnostics, write_layer_factors
from smis.data import make_dataset
from smis.networks import Latents, build_networks
from smis.viz import to_uint8
from smis.widgets import Editor, benchmark_summary, layer_names, png_bytes

# instance norm: no untrained running stats
TINY = dict(ngf=4, nef=4, ndf=4, spade_hidden=8, z_dim=8, z_dim_local=4, norm_G="instance")



@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    nets = build_networks("clvae", get_preset("synthscenes", **TINY), discriminator=False).eval()
    ds = make_dataset("synthscenes", None, "test", size=64, length=6)
    images, labels, codes = editing.encode_dataset(nets, ds)
    return nets, images, labels, codes, ds.info


@pytest.fixture
def editor(setup, tmp_path):
    nets, images, labels, codes, info = setup
    return Editor(nets, images, labels, info.class_names, info.palette, codes=codes, seed=7, out_dir=tmp_path)


def expected(nets, label, latents):
    return to_uint8(editing.synthesize(nets, label, latents)[0])


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def pick_pca_selection(ed):
    """A (class, layer) of the current photo with a real PCA (>= 2 codes)."""
    for c in [v for _, v in ed.cls.options]:
        for l in range(len(ed.nets.spec.layers)):
            if ed.directions.count[l, c] >= 2:
                return c, l
    raise AssertionError("no class with enough codes")


def test_initial_state_shows_the_photo_reconstruction(editor, setup):
    nets, images, labels, codes, info = setup
    want = expected(nets, labels[0][None], codes[0])
    assert np.array_equal(editor.after, want) and np.array_equal(editor.before, want)
    assert np.array_equal(decode(editor.after_view.value), want.repeat(4, 0).repeat(4, 1))
    assert [v for _, v in editor.cls.options] == torch.unique(labels[0]).tolist()
    assert editor.cls.options[0][0] == info.class_names[editor.cls.options[0][1]]
    assert [v for _, v in editor.layer.options] == list(range(5)) and "(fine)" in layer_names(nets)[0][0]


@pytest.mark.parametrize("unit", ["prior", "pca"])
def test_sliders_give_exactly_move_along_the_principal_directions(setup, tmp_path, unit):
    nets, images, labels, codes, info = setup
    editor = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, slider_unit=unit,
                    out_dir=tmp_path)
    c, l = pick_pca_selection(editor)
    editor.cls.value, editor.layer.value = c, l
    editor.sliders[0].value = 2.0
    editor.sliders[2].value = -1.5
    d = editor.directions
    alpha = torch.tensor([2.0, 0.0, -1.5]) * (d.std[l, c] if unit == "pca" else 1.0)
    want_lat = editing.move(codes[0], c, l, d.components[l, c, :3], alpha)
    assert torch.equal(editor.latents.zc, want_lat.zc)
    want = expected(nets, labels[0][None], want_lat)
    assert np.array_equal(editor.after, want)
    assert np.array_equal(decode(editor.after_view.value), want.repeat(4, 0).repeat(4, 1))
    assert np.array_equal(editor.before, expected(nets, labels[0][None], codes[0]))
    assert len(editor.timings) == 2 and len(editor.history) == 1            # one undo step for the slider session
    # the edit touched only that class at that layer
    other = torch.ones(editor.latents.zc.shape[1:3], dtype=torch.bool)
    other[l, c] = False
    assert torch.equal(editor.latents.zc[0][other], codes.zc[0][other])


def test_changing_the_selection_starts_a_new_edit_without_generating(editor):
    c, l = pick_pca_selection(editor)
    editor.cls.value, editor.layer.value = c, l
    editor.sliders[0].value = 1.0
    edited, n = editor.after.copy(), len(editor.timings)
    editor.layer.value = (l + 1) % 5
    assert all(s.value == 0.0 for s in editor.sliders) and len(editor.timings) == n
    assert np.array_equal(editor.before, edited) and np.array_equal(editor.after, edited)
    assert torch.equal(editor.anchor.zc, editor.latents.zc)
    steps = len(editor.history)
    editor.on_slider({"name": "value", "old": 1.0, "new": 0.0})            # a browser echoing the reset
    assert len(editor.history) == steps and len(editor.timings) == n       # no empty undo step, no render


def test_resample_and_style_buttons_call_the_pure_functions(editor, setup):
    nets, images, labels, codes, _ = setup
    g = torch.Generator().manual_seed(7)                                   # the editor's seed
    c = editor.cls.options[1][1]
    editor.cls.value, editor.layer.value = c, 1
    editor.resample_button.click()
    want = editing.resample(codes[0], [c], [1], g)
    assert torch.equal(editor.latents.zc, want.zc)
    assert np.array_equal(editor.after, expected(nets, labels[0][None], want))
    editor.all_layers.value = True
    editor.resample_button.click()
    want = editing.resample(want, [c], None, g)
    assert torch.equal(editor.latents.zc, want.zc)
    editor.reference.value = 3
    editor.style_global.value = False
    editor.style_button.click()
    want = sampling.style_latents(nets.spec, labels[0][None], codes[3], labels[3][None], g, global_code=False)
    assert torch.equal(editor.latents.zc, want.zc) and torch.equal(editor.latents.z, want.z)
    assert np.array_equal(editor.after, expected(nets, labels[0][None], want))
    assert np.array_equal(decode(editor.ref_view.value), to_uint8(images[3]).repeat(2, 0).repeat(2, 1))
    editor.prior_button.click()
    want = Latents.prior(nets.spec, labels[0][None], generator=g)
    assert torch.equal(editor.latents.zc, want.zc)


def test_undo_walks_back_through_edits_and_photos(editor, setup):
    nets, images, labels, codes, _ = setup
    states = [editor.latents]
    c, l = pick_pca_selection(editor)
    editor.cls.value, editor.layer.value = c, l
    editor.sliders[1].value = 3.0
    states.append(editor.latents)
    editor.resample_button.click()
    states.append(editor.latents)
    assert not torch.equal(states[1].zc, states[2].zc) and not torch.equal(states[0].zc, states[1].zc)
    editor.photo.value = 2
    assert np.array_equal(editor.after, expected(nets, labels[2][None], codes[2]))
    for want in reversed(states):                                          # back to photo 0, step by step
        editor.undo_button.click()
        assert editor.photo.value == 0 and torch.equal(editor.latents.zc, want.zc)
        assert np.array_equal(editor.after, expected(nets, labels[0][None], want))
        assert all(s.value == 0 for s in editor.sliders)
    editor.undo_button.click()
    assert "nothing to undo" in editor.status.value


def test_save_writes_the_panel(editor, tmp_path):
    editor.sliders[0].value = 1.0
    editor.save_button.click()
    (path,) = editor.saved
    assert path.parent == tmp_path and np.array_equal(np.asarray(Image.open(path).convert("RGB")), editor.panel())
    assert editor.panel().shape == (64, 3 * 64 + 4, 3)


def test_random_directions_where_pca_has_too_few_codes(setup, tmp_path):
    nets, images, labels, codes, info = setup
    few = editing.principal_directions(codes[:1], 3)                        # one photo: no class has 2 codes
    ed = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, directions=few, out_dir=tmp_path)
    ed.sliders[0].value = 1.0
    comps, std, kind = ed._direction()
    assert kind.startswith("random") and torch.allclose(comps.norm(dim=-1), torch.ones(3))
    assert torch.equal(std, torch.ones(3))
    c, l = ed.selection
    want = editing.move(codes[0], c, l, comps, torch.tensor([1.0, 0.0, 0.0]))
    assert np.array_equal(ed.after, expected(nets, labels[0][None], want))


def test_editor_refuses_bad_arguments(setup):
    nets, images, labels, codes, info = setup
    vae = build_networks("gaugan_vae", get_preset("synthscenes", **TINY), discriminator=False).eval()
    with pytest.raises(ValueError, match=r"Fix: load a clvae model .*: clvae, .*groupdnet"):
        Editor(vae, images, labels, info.class_names, info.palette)
    with pytest.raises(ValueError, match=r"layer=5 out of range.*0\.\.4"):
        Editor(nets, images, labels, info.class_names, info.palette, codes=codes, layer=5)
    with pytest.raises(ValueError, match="slider_unit='sd'"):
        Editor(nets, images, labels, info.class_names, info.palette, codes=codes, slider_unit="sd")
    ed = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, layer=3)
    assert ed.layer.value == 3


def test_editor_checks_its_arguments_at_construction(setup, tmp_path):
    """Out-of-range start photo, codes for fewer photos, a short palette, a non-positive scale and a
    float mask were accepted (or failed later in a traitlets / indexing error); now a ValueError
    (TypeError for the mask) names the argument, the value, the valid range and the fix."""
    nets, images, labels, codes, info = setup
    make = lambda **kw: Editor(**{"nets": nets, "images": images, "labels": labels, "class_names": info.class_names,
                                  "palette": info.palette, "codes": codes, "out_dir": tmp_path, **kw})
    for index in (6, -1, 1.0):
        with pytest.raises(ValueError, match=rf"index={index!r} out of range: 6 photos were given, so the start photo "
                                             r"is an integer in 0\.\.5"):
            make(index=index)
    with pytest.raises(ValueError, match=r"codes hold 3 photos' latents but 6 images were given.*codes=None"):
        make(codes=codes[:3])
    with pytest.raises(ValueError, match=r"zc are \(6, 5, 1, 4\).*expects.*\(6, 5, 10, 4\)"):
        make(codes=Latents(codes.z, codes.zc[:, :, :1], codes.present[:, :, :1]))
    with pytest.raises(ValueError, match=r"palette has 5 entries but the model has C = 10 classes.*info.palette"):
        make(palette=info.palette[:5])
    with pytest.raises(ValueError, match=r"class_names has 9 entries but the model has C = 10 classes"):
        make(class_names=info.class_names[:9])
    for scale in (0, -2, 1.5):
        with pytest.raises(ValueError, match=rf"scale={scale!r} must be an integer >= 1"):
            make(scale=scale)
    with pytest.raises(TypeError, match="integer class ids, got dtype torch.float32"):
        make(labels=labels.float())
    assert make(index=5, scale=1).photo.value == 5


def test_editing_a_class_the_codes_lack_is_reported_not_applied(editor):
    """An edit refused by smis.editing (the class is in no latent layer of these codes) shows its
    reason in the status line and leaves image and history alone instead of a silent no-op edit."""
    c, _ = editor.selection
    present = editor.latents.present.clone()
    present[..., c] = False
    editor.latents = editor.anchor = Latents(editor.latents.z, editor.latents.zc, present)
    after, history = editor.after.copy(), list(editor.history)
    editor.resample_button.click()
    assert "cannot resample" in editor.status.value and f"classes [{c}] are absent" in editor.status.value
    editor.sliders[0].value = 1.0
    assert "cannot move" in editor.status.value
    assert np.array_equal(editor.after, after) and len(editor.history) == len(history)


def test_png_bytes_upscales_with_nearest_neighbour():
    im = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = decode(png_bytes(im, 3))
    assert out.shape == (6, 9, 3) and np.array_equal(out[::3, ::3], im)


def test_quietly_resets_controls_without_firing_edits(editor):
    """The one `_quietly` block (slider reset, class list, undo across photos): handlers return while it
    is active, and the flag is restored even when setting a control raises."""
    c, l = pick_pca_selection(editor)
    editor.cls.value, editor.layer.value = c, l
    n, steps = len(editor.timings), len(editor.history)
    with editor._quietly():
        editor.sliders[0].value = 2.0                                      # no edit fires
        with editor._quietly():
            pass
        assert editor._quiet                                               # nesting keeps it set
    assert not editor._quiet and len(editor.timings) == n and len(editor.history) == steps
    with pytest.raises(RuntimeError):
        with editor._quietly():
            raise RuntimeError("boom")
    assert not editor._quiet
    editor.sliders[0].value = 1.0                                          # handlers fire again
    assert len(editor.timings) == n + 1


def test_latency_table_and_benchmark_summary(editor, tmp_path):
    with pytest.raises(ValueError, match="no slider update has been timed yet"):
        editor.latency_table()
    editor.timings[:] = [0.010, 0.020, 0.030, 0.040]
    t = editor.latency_table()
    assert list(t.index) == ["slider update"] and t.index.name == "editor"
    assert t.loc["slider update", "median_ms"] == 25.0 and t.loc["slider update", "p90_ms"] == 37.0
    assert t.loc["slider update", "updates"] == 4 and t.loc["slider update", "threads"] == torch.get_num_threads()
    assert benchmark_summary(tmp_path / "absent.json") is None
    (tmp_path / "b.json").write_text('{"target_median_ms": 150, "results": [{"threads": 1, "end_to_end": '
                                     '{"median_ms": 41.4}}, {"threads": 2, "end_to_end": {"median_ms": 30.6}}]}')
    assert benchmark_summary(tmp_path / "b.json") == ("benchmarks/bench_editor.py on the demo model: 1 thread(s): "
                                                      "median 41 ms, 2 thread(s): median 31 ms (target <= 150 ms)")


# ---------------------------------------------------------------------------------------------
# the layer selector tells the truth about layers (issue 22 item 6)


def _diagnostics(inactive=(3,)):
    kl = np.array([1.2, 0.6, 0.3, 0.004, 0.2])
    au = np.array([40, 20, 5, 0, 3])
    for l in inactive:
        kl[l], au[l] = 0.004, 0
    return LayerDiagnostics(kl=kl, active_units=au, units=np.full(5, 64), classes_visible=np.ones(5), images=64)


def test_editor_measures_its_layers_on_load(editor, setup):
    nets, images, labels, codes, info = setup
    want = layer_diagnostics(nets, images, labels)                      # 6 photos: all of them
    assert np.allclose(editor.diagnostics.kl, want.kl) and np.array_equal(editor.diagnostics.active_units,
                                                                           want.active_units)
    for text, l in editor.layer.options:
        assert f"{int(want.active_units[l])}/{int(want.units[l])} active units" in text
        assert ("INACTIVE" in text) == (not want.active[l])


def test_selecting_an_inactive_layer_says_it_changes_nothing(setup, tmp_path):
    nets, images, labels, codes, info = setup
    ckpt = tmp_path / "model.pt"
    write_layer_factors(ckpt, [{"layer": 0, "moves_most": "texture kind", "shares": {"texture kind": 0.5}},
                               {"layer": 3, "moves_most": "colour mode", "shares": {"colour mode": 0.01}}])
    ed = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, seed=7, out_dir=tmp_path,
                diagnostics=_diagnostics(), layer_factors=ckpt)
    labels_shown = dict((l, t) for t, l in ed.layer.options)
    assert labels_shown[3].endswith("INACTIVE (KL 0.004, 0/64 active units)")          # no factor for a dead layer
    assert labels_shown[0].endswith("active (KL 1.2, 40/64 active units), moves texture kind most")
    ed.layer.value = 3
    assert "layer 3 is inactive (KL 0.004, 0/64 active units): its codes carry (almost) nothing" in ed.status.value
    ed.resample_button.click()
    assert ed.status.value.startswith("resampled") and "layer 3 is inactive" in ed.status.value
    ed.layer.value = 0
    assert "layer 0 is active (KL 1.2, 40/64 active units); it moves texture kind most" in ed.status.value
    assert "inactive" not in ed.status.value
    ed.all_layers.value = True
    ed.resample_button.click()
    assert "inactive" not in ed.status.value                             # all layers: no single-layer note


def test_editor_layer_factors_hook_takes_the_summary_and_checks_the_diagnostics(setup, tmp_path):
    nets, images, labels, codes, info = setup
    ed = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, out_dir=tmp_path,
                diagnostics=_diagnostics(inactive=()), layer_factors=[{"layer": 2, "moves_most": "shading"},
                                                                      {"layer": 1, "moves_most": None}])
    assert dict((l, t) for t, l in ed.layer.options)[2].endswith("moves shading most")
    assert ed.layer_state(2).endswith("; it moves shading most")
    assert dict((l, t) for t, l in ed.layer.options)[1].endswith(", changes no measured factor")
    assert ed.layer_state(1).endswith("; resampling it changed none of the measured factors")
    assert Editor(nets, images, labels, info.class_names, info.palette, codes=codes, out_dir=tmp_path,
                  layer_factors=tmp_path / "absent.pt").layer_factors is None   # no table beside it: not shown
    short = LayerDiagnostics(*(np.ones(3),) * 4, images=3)
    with pytest.raises(ValueError, match="3 latent layers but the model has 5"):
        Editor(nets, images, labels, info.class_names, info.palette, codes=codes, out_dir=tmp_path, diagnostics=short)


def test_drag_moves_the_slider_through_every_value_and_undo_line_says_the_codes_came_back(setup, tmp_path):
    nets, images, labels, codes, info = setup
    ed = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, seed=7, out_dir=tmp_path)
    by_hand = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, seed=7, out_dir=tmp_path)
    c, l = pick_pca_selection(ed)
    panel = ed.drag(c, l, values=[-1.0, 0.5, 2.0])
    by_hand.cls.value, by_hand.layer.value = c, l
    for v in (-1.0, 0.5, 2.0):
        by_hand.sliders[0].value = v
    assert np.array_equal(panel, by_hand.panel()) and ed.sliders[0].value == 2.0
    assert ed.latency_table()["updates"].iloc[0] == 3
    assert not torch.equal(ed.latents.zc, codes[0].zc)
    assert ed.undo_line(codes[0]) == "undone | codes restored: True"
    ed.drag(c, l)                                                          # the default: 30 updates to +2.5
    assert ed.latency_table()["updates"].iloc[0] == 33 and ed.sliders[0].value == 2.5
