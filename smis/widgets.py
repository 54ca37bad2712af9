"""An ipywidgets editor over `smis.editing`: pick a photo, a class and a layer, then edit.

    editor = Editor(nets, images, labels, info.class_names, info.palette, codes=mu, directions=dirs)
    editor.widget            # display it in a notebook

Shown: mask | before | after (before = the image when the current edit began). Controls: the
photo to edit, the class (named; those in the mask), the latent layer (0 = fine ... L-1 = coarse),
sliders along the top principal directions of that class's codes at that layer (in steps of the
prior's standard deviation, or of the encoded codes' with slider_unit="pca"), resample (that layer
or all layers), a reference photo for style-guided synthesis, undo and save PNG.

The layer selector tells what was measured of each layer: active or not, with its KL and active units
(`smis.diagnostics.layer_diagnostics` on up to 64 of the photos, when the editor starts), and the factor it
moves most when the model's layer-factor table is given or lies beside its checkpoint
(`smis.diagnostics.read_layer_factors`). Selecting or resampling an inactive layer says that it changes
nothing, instead of silently changing nothing. Every handler calls the pure
functions of `smis.editing`; tests drive the handlers from Python (set `slider.value`, call
`button.click()`) and compare `editor.after` with those functions' output.
"""
from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import numpy as np
import pandas as pd
import torch
from PIL import Image

from smis import editing, sampling
from smis.capabilities import require_edit
from smis.diagnostics import LayerDiagnostics, layer_diagnostics, read_layer_factors
from smis.networks import Latents, Networks
from smis.networks.latents import check_label
from smis.utils import resolve
from smis.viz import colorize, grid, save_png, to_uint8


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, upscaled by `scale` with nearest neighbour (fast zlib level 1)."""
    if scale > 1:
        image = image.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


DIAGNOSTIC_IMAGES = 64   # photos the editor measures its layers on at start (KL and active units: cheap)


def layer_names(nets: Networks,
                diagnostics: LayerDiagnostics | None = None,    # measured KL / active units per layer
                factors: Sequence[dict] | None = None,          # layer_factor_summary: the factor each moves most
                ) -> list[tuple[str, int]]:
    """Dropdown options for the L latent layers: (label, position on the L axis). The label says where the layer
    sits (fine ... coarse) and, when measured, whether it is active (KL, active units) and what it moves most."""
    if nets.spec.layers == (0,):                                        # GroupDNet: one code map per class
        names = [("0: one code per class (GroupDNet)", 0)]
    else:
        L = len(nets.spec.layers)
        role = lambda i: "fine" if i == 0 else "coarse" if i == L - 1 else "mid"
        names = [(f"{i}: encoder layer {l} ({role(i)})", i) for i, l in enumerate(nets.spec.layers)]
    moves = {int(f["layer"]): f.get("moves_most") for f in factors or ()}
    out = []
    for text, i in names:
        if diagnostics is not None:
            d = diagnostics
            state = "active" if d.active[i] else "INACTIVE"
            text += f", {state} (KL {d.kl[i]:.3g}, {int(d.active_units[i])}/{int(d.units[i])} active units)"
        if i in moves and (diagnostics is None or diagnostics.active[i]):
            text += f", moves {moves[i]} most" if moves[i] else ", changes no measured factor"
        out.append((text, i))
    return out


class Editor:
    """Interactive class- and layer-wise editing of photos (see module docstring)."""

    def __init__(self,
                 nets: Networks,                         # clvae-style networks with an encoder, eval mode
                 images: torch.Tensor,                   # (M, 3, H, W) photos in [-1, 1] to edit / use as references
                 labels: torch.Tensor,                   # (M, H, W) their masks
                 class_names: Sequence[str],             # C names
                 palette: Sequence[Sequence[int]],       # C mask colours
                 codes: Latents | None = None,           # encoder means of the photos (None: encoded here)
                 directions: editing.Directions | None = None,   # PCA per (layer, class); None: from `codes`
                 index: int = 0,                         # photo to start with
                 layer: int = 0,                         # latent layer to start with (0 = finest)
                 n_sliders: int = 3,                     # principal directions shown
                 slider_range: float = 3.0,              # slider extent, in slider units
                 slider_unit: str = "prior",             # "prior": 1 (the prior's sd); "pca": the codes' sd there
                 scale: int = 4,                         # display upscaling (nearest)
                 seed: int = 0,                          # seed of the resample / prior draws
                 out_dir: str | Path = "outputs/editor",  # where "save PNG" writes (relative to the repo root)
                 diagnostics: LayerDiagnostics | None = None,   # per-layer KL / active units; None: measured here
                 layer_factors: Sequence[dict] | str | Path | None = None,   # what each layer moves most:
                 # edit_measures.layer_factor_summary(table), or the checkpoint (its .layers.json); None: not shown
                 ):
        labels = self._check_arguments(nets, images, labels, class_names, palette, codes, index, layer, slider_unit,
                                       scale)
        # -- state -----------------------------------------------------------------------------
        self.nets, self.images, self.labels = nets, images, labels
        self.class_names, self.palette, self.scale = list(class_names), palette, int(scale)
        self.slider_unit = slider_unit
        self.codes = codes if codes is not None else editing.encode(nets, images, self.labels)
        self.directions = directions if directions is not None else editing.principal_directions(self.codes, n_sliders)
        self.diagnostics = diagnostics if diagnostics is not None else self._measure_layers()
        L = len(nets.spec.layers)
        if self.diagnostics is not None and len(self.diagnostics.kl) != L:
            raise ValueError(f"diagnostics describe {len(self.diagnostics.kl)} latent layers but the model has {L}. "
                             "Fix: pass layer_diagnostics(nets, images, labels) of this model, or None to measure here")
        self.layer_factors = (read_layer_factors(layer_factors) if isinstance(layer_factors, (str, Path))
                              else None if layer_factors is None else list(layer_factors))
        self.n_sliders = min(n_sliders, self.directions.components.shape[2])
        self.generator = torch.Generator(device=images.device).manual_seed(seed)
        self.out_dir = resolve(out_dir)
        self.history: list[tuple[int, Latents]] = []
        self.timings: list[float] = []             # seconds per slider update, end to end
        self.saved: list[Path] = []
        self._quiet = False                          # set while resetting controls (`_quietly`): no edits fire

        self._build_controls(index, layer, slider_range)
        self._wire()
        self.widget = self._layout()
        self._load(index)
        self.on_reference()

    # -- construction --------------------------------------------------------------------------
    def _measure_layers(self) -> LayerDiagnostics | None:
        """KL and active units of each latent layer on up to DIAGNOSTIC_IMAGES of the photos (None with fewer
        than 2: a variance needs two)."""
        n = min(len(self.images), DIAGNOSTIC_IMAGES)
        if n < 2:
            return None
        return layer_diagnostics(self.nets, self.images[:n], self.labels[:n])

    @staticmethod
    def _check_arguments(nets, images, labels, class_names, palette, codes, index, layer, slider_unit, scale
                         ) -> torch.Tensor:
        """Raise a ValueError naming the fix for anything the editor cannot work with; the labels as (M, H, W) long."""
        require_edit(nets, "photo editing (the editor)")               # cimle, gaugan, gaugan_vae: named fix
        if nets.spec.z_dim_local <= 0 or not nets.spec.has_class_codes:
            raise ValueError(f"the editor needs class- and layer-wise codes; the {nets.variant!r} variant has none. "
                             "Fix: load a clvae or groupdnet model")
        if nets.E is None:
            raise ValueError("the editor needs an encoder to edit photos")
        if slider_unit not in ("prior", "pca"):
            raise ValueError(f"slider_unit={slider_unit!r}: use 'prior' (steps of the prior's sd, 1) or 'pca' "
                             "(of the codes' sd)")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) must be equally many and not empty")
        M, C = len(images), nets.spec.num_classes
        labels = check_label(labels, C)                                 # integer (M, H, W), ids in [0, C)
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"images must be (M, 3, H, W) matching labels (M, H, W) = {tuple(labels.shape)}, got "
                             f"{tuple(images.shape)}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < M:
            raise ValueError(f"index={index!r} out of range: {M} photos were given, so the start photo is an integer "
                             f"in 0..{M - 1}; pass one of those (or more photos)")
        for name, given, entry in (("class_names", class_names, "name"), ("palette", palette, "RGB colour")):
            if len(given) < C:
                raise ValueError(f"{name} has {len(given)} entries but the model has C = {C} classes: one {entry} per "
                                 f"class is needed; pass the dataset's info.{name}")
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"scale={scale!r} must be an integer >= 1 (the display upscaling factor, nearest "
                             "neighbour); use e.g. scale=4, or 1 for the images' own size")
        if codes is not None:
            if codes.batch_size != M:
                raise ValueError(f"codes hold {codes.batch_size} photos' latents but {M} images were given; pass the "
                                 "codes of all of them (editing.encode(nets, images, labels)) or codes=None to "
                                 "encode here")
            nets.spec.check_latents(codes, M, "the editor")
        L = len(nets.spec.layers)
        if not 0 <= layer < L:
            raise ValueError(f"layer={layer} out of range: the model has {L} latent layers (0..{L - 1})")
        return labels

    def _build_controls(self, index: int, layer: int, slider_range: float):
        """The widgets: photo / class / layer pickers, PCA sliders, buttons, the image views."""
        photos = [(f"photo {i}", i) for i in range(len(self.images))]
        self.photo = W.Dropdown(options=photos, value=index, description="photo")
        self.cls = W.Dropdown(description="class")
        self.layer = W.Dropdown(options=layer_names(self.nets, self.diagnostics, self.layer_factors), value=layer,
                                description="layer", layout=W.Layout(width="max-content"))
        self.sliders = [W.FloatSlider(value=0.0, min=-slider_range, max=slider_range, step=0.1,
                                      description=f"PC{i + 1}", continuous_update=True, readout_format=".1f")
                        for i in range(self.n_sliders)]
        for i, s in enumerate(self.sliders):
            s.add_class(f"smis-pc{i}")
        self.all_layers = W.Checkbox(value=False, description="all layers", indent=False)
        self.resample_button = W.Button(description="resample", tooltip="new prior codes for this class")
        self.prior_button = W.Button(description="sample all",
                                     tooltip="every code from the prior (a new image of this mask)")
        self.reset_button = W.Button(description="encode photo", tooltip="back to the photo's own codes")
        self.reference = W.Dropdown(options=photos, value=(index + 1) % len(self.images), description="reference")
        self.style_layer_only = W.Checkbox(value=False, description="this layer only", indent=False)
        has_global = self.nets.spec.z_dim > 0                           # groupdnet: class codes only
        self.style_global = W.Checkbox(value=has_global, description="global code too", indent=False,
                                       disabled=not has_global)
        self.style_button = W.Button(description="apply style", tooltip="style-guided synthesis from the reference")
        self.undo_button = W.Button(description="undo")
        self.save_button = W.Button(description="save PNG")
        self.status = W.HTML()
        width = self.images.shape[-1]
        view = lambda: W.Image(format="png", layout=W.Layout(width=f"{width * self.scale}px"))
        self.mask_view, self.before_view, self.after_view = view(), view(), view()
        self.ref_view = W.Image(format="png", layout=W.Layout(width=f"{width * max(1, self.scale // 2)}px"))
        self.after_view.add_class("smis-after")
        self.before_view.add_class("smis-before")

    def _wire(self):
        """Connect every control to its handler."""
        self.photo.observe(self.on_photo, "value")
        self.cls.observe(self.on_select, "value")
        self.layer.observe(self.on_select, "value")
        for s in self.sliders:
            s.observe(self.on_slider, "value")
        self.resample_button.on_click(self.on_resample)
        self.prior_button.on_click(self.on_prior)
        self.reset_button.on_click(self.on_reset)
        self.reference.observe(self.on_reference, "value")
        self.style_button.on_click(self.on_style)
        self.undo_button.on_click(self.on_undo)
        self.save_button.on_click(self.on_save)

    def _layout(self) -> W.VBox:
        """The editor's box: views on top, edit and style controls below, then undo / save and the status."""
        caption = lambda t: W.HTML(f"<b>{t}</b>")
        views = W.HBox([W.VBox([caption("mask"), self.mask_view]), W.VBox([caption("before"), self.before_view]),
                        W.VBox([caption("after"), self.after_view])])
        edit = W.VBox([W.HBox([self.photo, self.reset_button, self.prior_button]), W.HBox([self.cls, self.layer]),
                       *self.sliders, W.HBox([self.resample_button, self.all_layers])])
        style = W.VBox([W.HBox([self.reference, self.ref_view]), W.HBox([self.style_layer_only, self.style_global]),
                        self.style_button])
        box = W.VBox([views, W.HBox([edit, style]), W.HBox([self.undo_button, self.save_button]), self.status])
        box.add_class("smis-editor")
        return box

    @contextmanager
    def _quietly(self):
        """Set controls without firing the edit handlers (they return while `_quiet` is set)."""
        was, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = was

    # -- state ---------------------------------------------------------------------------------
    @property
    def label(self) -> torch.Tensor:
        return self.labels[self.photo.value][None]                          # (1, H, W)

    @property
    def selection(self) -> tuple[int, int]:
        """(class id, layer position) being edited."""
        return self.cls.value, self.layer.value

    def render(self, latents: Latents) -> np.ndarray:
        """The image the generator makes of the current mask with `latents`, as (H, W, 3) uint8."""
        return to_uint8(editing.synthesize(self.nets, self.label, latents)[0])

    def _show(self, view: W.Image, image: np.ndarray):
        view.value = png_bytes(image, self.scale)

    def _set_latents(self, latents: Latents, push: bool = True, before: np.ndarray | None = None):
        """Make `latents` current and the start of a new edit (sliders back to 0)."""
        if push:
            self.history.append((self.photo.value, self.latents))
        self.latents = self.anchor = latents
        self.after = self.render(latents)
        self.before = self.after if before is None else before
        self._reset_sliders()
        self._show(self.before_view, self.before)
        self._show(self.after_view, self.after)

    def _reset_sliders(self):
        with self._quietly():
            for s in self.sliders:
                s.value = 0.0
        self._pushed = False

    def _load(self, index: int):
        lab = self.labels[index]
        present = torch.unique(lab).tolist()
        with self._quietly():
            self.cls.options = [(self.class_names[c], c) for c in present]
            self.cls.value = present[0]
        self.mask = colorize(lab, self.palette)
        self._show(self.mask_view, self.mask)
        self._set_latents(self.codes[index], push=False)
        self._say(f"photo {index}: its encoded codes")

    def _say(self, text: str):
        self.status.value = text

    def _direction(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(D, N) directions and (D,) slider units for the selection: PCA when the class had >= 2 codes there."""
        c, l = self.selection
        d = self.directions
        if int(d.count[l, c]) >= 2:
            comps, std = d.components[l, c, :self.n_sliders], d.std[l, c, :self.n_sliders]
            return comps, (std if self.slider_unit == "pca" else torch.ones_like(std)), "principal directions"
        g = torch.Generator().manual_seed(1000 * l + c)                      # fixed per selection
        comps = torch.stack([editing.random_direction(d.components.shape[-1], g) for _ in range(self.n_sliders)])
        unit = torch.ones(self.n_sliders).to(self.latents.zc)
        return comps.to(self.latents.zc), unit, "random directions (too few codes for PCA)"

    def slider_latents(self) -> Latents:
        """The latents the sliders ask for: anchor + sum_i value_i * unit_i * direction_i."""
        comps, std, _ = self._direction()
        alpha = torch.tensor([s.value for s in self.sliders], dtype=comps.dtype, device=comps.device) * std
        c, l = self.selection
        return editing.move(self.anchor, c, l, comps, alpha)

    # -- handlers ------------------------------------------------------------------------------
    def on_slider(self, change=None):
        if self._quiet:
            return
        if not self._pushed and all(s.value == 0 for s in self.sliders):
            return                                    # back at the anchor (e.g. the browser echoing a reset)
        t0 = time.perf_counter()
        try:
            latents = self.slider_latents()
        except ValueError as e:                       # e.g. a class these codes do not have: say it, keep the image
            self._say(f"cannot move: {e}")
            return
        if not self._pushed:                          # one undo step per slider session
            self.history.append((self.photo.value, self.anchor))
            self._pushed = True
        self.latents = latents
        self.after = self.render(self.latents)
        self._show(self.after_view, self.after)
        self.timings.append(time.perf_counter() - t0)

    def on_select(self, change=None):
        if self._quiet:
            return
        self._set_latents(self.latents, push=False, before=self.after)
        _, _, kind = self._direction()
        c, l = self.selection
        self._say(f"editing <b>{self.class_names[c]}</b> at layer {l}: sliders follow {kind}" + self._layer_note(l))

    def layer_state(self, layer: int) -> str:
        """What was measured of a latent layer, in words (`LayerDiagnostics.describe`, plus the factor it moves
        most when known); "" when nothing was measured."""
        text = self.diagnostics.describe(layer) if self.diagnostics is not None else ""
        moves = {int(f["layer"]): f.get("moves_most") for f in self.layer_factors or ()}
        if layer in moves and (self.diagnostics is None or self.diagnostics.active[layer]):
            text = (text or f"layer {layer}") + (f"; it moves {moves[layer]} most" if moves[layer]
                                                 else "; resampling it changed none of the measured factors")
        return text

    def _layer_note(self, layer: int) -> str:
        """The status suffix for a selected / resampled layer: its measured state, loud when inactive."""
        text = self.layer_state(layer)
        if not text:
            return ""
        inactive = self.diagnostics is not None and not self.diagnostics.active[layer]
        return f"<br><b>{text}</b>" if inactive else f"<br>{text}"

    def on_resample(self, button=None):
        c, l = self.selection
        layers = None if self.all_layers.value else [l]
        try:
            new = editing.resample(self.latents, [c], layers, self.generator)
        except ValueError as e:                       # e.g. a class these codes do not have: say it, keep the image
            self._say(f"cannot resample: {e}")
            return
        self._set_latents(new, before=self.after)
        self._say(f"resampled {self.class_names[c]} at {'all layers' if layers is None else f'layer {l}'}"
                  + (self._layer_note(l) if layers is not None else ""))

    def on_prior(self, button=None):
        self._set_latents(Latents.prior(self.nets.spec, self.label, generator=self.generator), before=self.after)
        self._say("every code drawn from the prior")

    def on_reset(self, button=None):
        self._set_latents(self.codes[self.photo.value], before=self.after)
        self._say("back to the photo's encoded codes")

    def on_reference(self, change=None):
        self.ref_view.value = png_bytes(to_uint8(self.images[self.reference.value]), max(1, self.scale // 2))

    def on_style(self, button=None):
        i = self.reference.value
        layers = [self.layer.value] if self.style_layer_only.value else None
        new = sampling.style_latents(self.nets.spec, self.label, self.codes[i], self.labels[i][None], self.generator,
                                    layers=layers, global_code=self.style_global.value)
        self._set_latents(new, before=self.after)
        self._say(f"style of photo {i} for the classes both masks share, prior elsewhere")

    def on_photo(self, change=None):
        if self._quiet:
            return
        self.history.append((change["old"] if change else self.photo.value, self.latents))
        self._load(self.photo.value)

    def on_undo(self, button=None):
        if not self.history:
            self._say("nothing to undo")
            return
        index, latents = self.history.pop()
        if index != self.photo.value:
            with self._quietly():
                self.photo.value = index
            self._load(index)
        self._set_latents(latents, push=False, before=self.after)
        self._say("undone")

    def panel(self) -> np.ndarray:
        """mask | before | after as one (H, 3W + 4, 3) uint8 image."""
        return grid([[self.mask, self.before, self.after]])

    def drag(self,
             cls: int,                                # the class to edit (an id in the photo's mask)
             layer: int = 0,                          # the latent layer (0 = finest)
             values: Sequence[float] | None = None,   # the slider's successive values; None: 30 from -2.5 to +2.5
             slider: int = 0,                         # which principal direction's slider
             ) -> np.ndarray:
        """Drive the editor from Python as a browser drag does: select `cls` and `layer`, then set the slider to
        each of `values` in turn (one timed update each, `latency_table`). Returns the panel after the drag
        (`panel`)."""
        self.cls.value, self.layer.value = cls, layer
        for v in np.linspace(-2.5, 2.5, 30) if values is None else values:
            self.sliders[slider].value = float(v)
        return self.panel()

    def undo_line(self,
                  codes: Latents,     # the photo's own codes (encoder means) the undo should bring back
                  ) -> str:
        """Click undo and say what it did: the status line and whether the editor's class codes equal `codes`'s
        again ("undone | codes restored: True")."""
        self.undo_button.click()
        return f"{self.status.value} | codes restored: {torch.equal(self.latents.zc, codes.zc)}"

    def latency_table(self) -> pd.DataFrame:
        """The slider updates timed so far (`timings`, end to end: edit, generator, PNG encoding) as one row:
        median and 90th percentile in ms, the number of updates and the torch threads, rounded to 0.1."""
        if not self.timings:
            raise ValueError("no slider update has been timed yet: move a slider (e.g. editor.sliders[0].value = 1.0) "
                             "first")
        ms = np.asarray(self.timings) * 1000
        return pd.DataFrame({"median_ms": [np.median(ms)], "p90_ms": [np.percentile(ms, 90)], "updates": [len(ms)],
                             "threads": [torch.get_num_threads()]},
                            index=pd.Index(["slider update"], name="editor")).round(1)

    def on_save(self, button=None) -> Path:
        path = self.out_dir / f"edit_photo{self.photo.value}_{len(self.saved):03d}.png"
        save_png(self.panel(), path)
        self.saved.append(path)
        self._say(f"saved {path}")
        return path


def benchmark_summary(path: str | Path = "benchmarks/results/editor_cpu.json") -> str | None:
    """One line from `benchmarks/bench_editor.py`'s results (median end-to-end update per thread count,
    against its target), or None when the file is absent."""
    path = resolve(path)
    if not path.exists():
        return None
    b = json.loads(path.read_text())
    return ("benchmarks/bench_editor.py on the demo model: "
            + ", ".join(f"{r['threads']} thread(s): median {r['end_to_end']['median_ms']:.0f} ms" for r in b["results"])
            + f" (target <= {b['target_median_ms']:.0f} ms)")
