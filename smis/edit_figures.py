"""The paper's editing figures (Figs. 12-15) from a model and its encoded test photos: each function draws one figure
with `smis.editing`'s pure edits, saves it as a labelled PNG (`smis.viz.save_grid`, plus the bare `_raw.png`) and
returns what the figure shows that its labels cannot (the classes edited, the photo interpolated to).

    images, labels, codes = editing.encode_dataset(nets, test)            # (M, 3, H, W), (M, H, W), encoder means
    diverse_samples_figure(nets, images, labels, palette, 6, seed=0, path=out / "diverse_samples.png")     # Fig. 12
    style_guided_figure(nets, images, labels, codes, palette, names, [3, 4, 5], [6, 7, 8], 0, out / "s.png")  # 13
    edited = object_editing_figure(nets, images, labels, codes, names, src=0, seed=0, path=out / "o.png")  # Fig. 14
    material_editing_figure(nets, labels, codes, directions, names, 0, edited[0], out / "m.png")         # Fig. 15
    layerwise_resampling_figure(nets, labels, codes, names, 0, edited[0], 0, out / "l.png")               # per layer

Every prior draw comes from a `torch.Generator` seeded here from `seed`, so a figure is a function of its arguments
(notebook 06 and the editor's tests draw the same images). Tiles are upscaled to at least 128 px.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smis import editing, sampling
from smis.networks import Latents, Networks
from smis.viz import colorize, grid, save_grid, to_uint8

MIN_TILE = 128        # smallest tile side in the figures (pixels; SynthScenes' 64 px images are doubled)


def _generate(nets: Networks, label: torch.Tensor, latents: Latents) -> np.ndarray:
    """(B, H, W, 3) uint8 images of G(label, latents)."""
    return to_uint8(editing.synthesize(nets, label, latents))


def diverse_samples_figure(nets: Networks,
                           images: torch.Tensor,            # (M, 3, H, W) test photos in [-1, 1]
                           labels: torch.Tensor,            # (M, H, W) their masks
                           palette: Sequence[Sequence[int]],  # the dataset's class colours
                           n_samples: int,                  # prior samples per mask
                           seed: int,                       # seed of the prior draws (one generator for every row)
                           path: str | Path,                # PNG written
                           n_masks: int = 3,                # rows: the first photos' masks
                           ) -> None:
    """Fig. 12: per row a mask, its photo, then `n_samples` images whose every code is a prior draw
    (`editing.sample_images`: one batched generator call per mask)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n_masks):
        samples, _ = editing.sample_images(nets, labels[i], n_samples, g)
        rows.append([colorize(labels[i], palette), to_uint8(images[i])] + list(to_uint8(samples)))
    save_grid(grid(rows, min_tile=MIN_TILE), path, ["mask", "photo"] + [f"sample {j + 1}" for j in range(n_samples)],
              [f"test photo {i}" for i in range(n_masks)],
              f"{nets.variant}: prior samples of one mask (every code drawn)")


def style_guided_figure(nets: Networks,
                        images: torch.Tensor,               # (M, 3, H, W) test photos in [-1, 1]
                        labels: torch.Tensor,               # (M, H, W) their masks
                        codes: Latents,                     # (M) their encoder means
                        palette: Sequence[Sequence[int]],   # the dataset's class colours
                        class_names: Sequence[str],         # the dataset's class names, by id
                        targets: Sequence[int],             # photos whose masks are drawn (columns)
                        refs: Sequence[int],                # reference photos (rows)
                        seed: int,                          # seed of the prior codes of the classes not shared
                        path: str | Path,                   # PNG written
                        ) -> list[list[str]]:
    """Fig. 13: top row the target masks; per reference photo a row of every mask in its style
    (`sampling.style_latents`: the reference's codes for shared classes at every layer, plus its global code); a last
    row from the first reference's deepest layer only, without its global code. Returns, per target, the names of
    the classes it shares with the first reference."""
    L = len(nets.spec.layers)
    tlab = labels[list(targets)]
    first = colorize(labels[0], palette)
    rows = [[np.full_like(first, 255)] + [colorize(labels[t], palette) for t in targets]]
    for r in refs:
        lat = sampling.style_latents(nets.spec, tlab, codes[r], labels[r][None], torch.Generator().manual_seed(seed))
        rows.append([to_uint8(images[r])] + list(_generate(nets, tlab, lat)))
    lat = sampling.style_latents(nets.spec, tlab, codes[refs[0]], labels[refs[0]][None],
                                torch.Generator().manual_seed(seed), layers=[L - 1], global_code=False)
    rows.append([to_uint8(images[refs[0]])] + list(_generate(nets, tlab, lat)))
    save_grid(grid(rows, min_tile=MIN_TILE), path, ["reference"] + [f"mask of photo {t}" for t in targets],
              ["target masks"] + [f"photo {r}: all layers" for r in refs] + [f"photo {refs[0]}: layer {L - 1} only"],
              "style-guided synthesis: each mask (columns) in the style of each reference photo (rows)")
    shared = editing.shared_classes(tlab, labels[refs[0]][None], len(class_names))
    return [[class_names[c] for c in torch.nonzero(s).flatten().tolist()] for s in shared]


def object_editing_figure(nets: Networks,
                          images: torch.Tensor,             # (M, 3, H, W) test photos in [-1, 1]
                          labels: torch.Tensor,             # (M, H, W) their masks
                          codes: Latents,                   # (M) their encoder means
                          class_names: Sequence[str],       # the dataset's class names, by id
                          src: int,                         # the photo edited
                          seed: int,                        # class c's draws come from seed + c
                          path: str | Path,                 # PNG written
                          n_classes: int = 3,               # rows: the photo's largest classes
                          n_edits: int = 4,                 # edits per row
                          ) -> list[int]:
    """Fig. 14: per edited class (the photo's `n_classes` largest) its region, the reconstruction and `n_edits`
    resamplings of its codes at every layer (`editing.resample`), every other code kept; a last row edits the first
    class again and pastes every other class's pixels from the photo (`editing.paste_classes`). Returns the edited
    class ids, largest first."""
    label = labels[src][None]
    present = torch.unique(labels[src]).tolist()
    edit_classes = sorted(present, key=lambda c: -int((labels[src] == c).sum()))[:n_classes]
    recon = _generate(nets, label, codes[src])[0]
    many = label.expand(n_edits, -1, -1)
    rows = []
    for c in edit_classes:
        lat = editing.resample(codes[src].expand(n_edits), [c], None, torch.Generator().manual_seed(seed + c))
        region = np.repeat(((labels[src] == c).numpy() * 255).astype(np.uint8)[..., None], 3, -1)
        rows.append([region, recon] + list(_generate(nets, many, lat)))
    c = edit_classes[0]
    lat = editing.resample(codes[src].expand(n_edits), [c], None, torch.Generator().manual_seed(seed + c))
    pasted = editing.paste_classes(editing.synthesize(nets, many, lat), images[src][None], many,
                                   [k for k in present if k != c])
    rows.append([to_uint8(images[src]), recon] + list(to_uint8(pasted)))
    save_grid(grid(rows, min_tile=MIN_TILE), path,
              ["region / photo", "reconstruction"] + [f"edit {j + 1}" for j in range(n_edits)],
              [f"{class_names[k]} resampled" for k in edit_classes] + [f"{class_names[c]}, other pixels pasted"],
              f"object editing of test photo {src}: one class's codes resampled at every layer, all others kept")
    return edit_classes


def material_editing_figure(nets: Networks,
                            labels: torch.Tensor,           # (M, H, W) the encoded photos' masks
                            codes: Latents,                 # (M) their encoder means
                            directions: editing.Directions,  # editing.principal_directions(codes)
                            class_names: Sequence[str],     # the dataset's class names, by id
                            src: int,                       # the photo edited
                            c: int,                         # the class edited (present in photo src)
                            path: str | Path,               # PNG written
                            steps: int = 7,                 # images per row
                            ) -> int:
    """Fig. 15: class c's code moved along its first principal direction by -3 ... +3 code units
    (`editing.move`) at the deepest layer (coarse) and at layer 0 (fine); a last row interpolating all its layers'
    codes towards the next photo holding class c (`editing.interpolate`). Returns that photo's index."""
    L = len(nets.spec.layers)
    alphas = torch.linspace(-3, 3, steps)
    many = labels[src][None].expand(steps, -1, -1)
    rows = []
    for l in (L - 1, 0):                                      # coarse, then fine
        lat = editing.move(codes[src].expand(steps), c, l, directions.components[l, c, 0], alphas)
        rows.append(list(_generate(nets, many, lat)))
    other = next((i for i in range(1, len(labels)) if bool((labels[i] == c).any())), None)
    if other is None:
        raise ValueError(f"material_editing_figure: no photo but {src} holds class {c} ({class_names[c]!r}). Fix: "
                         "encode more photos or edit another class")
    rows.append(list(_generate(nets, many, editing.interpolate(codes[src], codes[other], torch.linspace(0, 1, steps),
                                                               classes=[c]))))
    save_grid(grid(rows, min_tile=MIN_TILE), path, [f"{a:+.0f}" for a in alphas.tolist()],
              [f"layer {L - 1} (coarse), PC1", "layer 0 (fine), PC1", f"to photo {other}, t = 0..1"],
              f"material editing of {class_names[c]} in test photo {src}: moved along the first principal direction "
              "by -3..+3 code units")
    return other


def layerwise_resampling_figure(nets: Networks,
                                labels: torch.Tensor,       # (M, H, W) the encoded photos' masks
                                codes: Latents,             # (M) their encoder means
                                class_names: Sequence[str],  # the dataset's class names, by id
                                src: int,                   # the photo edited
                                c: int,                     # the class resampled
                                seed: int,                  # seed of the draws (one generator, layer after layer)
                                path: str | Path,           # PNG written
                                draws: int = 4,             # rows
                                ) -> None:
    """One layer at a time: per column one latent layer (0 = fine ... L-1 = coarse), class c's code resampled at
    that layer only (`editing.resample`), `draws` draws in the rows."""
    L = len(nets.spec.layers)
    g = torch.Generator().manual_seed(seed)
    many = labels[src][None].expand(draws, -1, -1)
    cols = [_generate(nets, many, editing.resample(codes[src].expand(draws), [c], [l], g)) for l in range(L)]
    save_grid(grid([[cols[l][r] for l in range(L)] for r in range(draws)], min_tile=MIN_TILE), path,
              [f"layer {l} (enc. {nets.spec.layers[l]})" + (" fine" if l == 0 else " coarse" if l == L - 1 else "")
               for l in range(L)],
              [f"draw {r + 1}" for r in range(draws)],
              f"{class_names[c]} in test photo {src} resampled at one latent layer per column")
