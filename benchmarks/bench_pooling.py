"""Class-wise max-pooling + KL (Eq. 16-18): one `scatter_reduce` per layer vs a loop reference.

ADE20K encoder configuration: 151 classes, N = 151, encoder input 256x256, width 64, latent layers
1..5 (features (B, 64, 128, 128) ... (B, 512, 8, 8)), masks with ~17 classes each (a Voronoi
partition with a few small regions that vanish at coarse scales). Each timed step is forward +
backward of pooling -> LeakyReLU -> shared linear heads (mu, logvar) -> KL; the two versions
differ only in the pooling: one `scatter_reduce` per layer, or a loop over samples x classes as the
published encoder does. Both give the same KL and gradients (asserted). Prints a table and writes JSON.

    python benchmarks/bench_pooling.py --batch 4 16 --device cpu
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import best_time, machine, reference_args, time_once, voronoi_masks  # noqa: E402 (puts the repo on sys.path)
from smis.losses import kl_divergence  # noqa: E402
from smis.networks import Latents, classwise_max_pool, encoder_widths, resize_labels  # noqa: E402
from smis.utils import atomic_write_json  # noqa: E402

C, N, NEF, SIZE, LAYERS = 151, 151, 64, 256, (1, 2, 3, 4, 5)


def make_problem(B: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    label = voronoi_masks(B, SIZE, generator=g, num_classes=C).to(device)
    widths = encoder_widths(NEF)[:len(LAYERS)]
    feats = [torch.randn(B, d, SIZE >> l, SIZE >> l, generator=g).to(device).requires_grad_()
             for l, d in zip(LAYERS, widths)]
    heads = [(torch.nn.Linear(d, N), torch.nn.Linear(d, N)) for d in widths]
    for mu, var in heads:
        mu.to(device), var.to(device)
    labels = [resize_labels(label, f.shape[-2:]) for f in feats]
    return feats, heads, labels


def pool_vectorised(f, lab):
    return classwise_max_pool(f, lab, C)                                           # (B, C, D), (B, C)


def pool_loop(f, lab):
    """Reference: layers x samples x classes in Python, as the published encoder does."""
    B, D = f.shape[:2]
    pooled = f.new_zeros(B, C, D)
    present = torch.zeros(B, C, dtype=torch.bool, device=f.device)
    for b, fb in enumerate(f.unbind(0)):                                          # fb (D, h, w)
        for c in lab[b].unique().tolist():
            pooled[b, c] = fb[:, lab[b] == c].max(dim=1).values
            present[b, c] = True
    return pooled, present


def pooled_kl(pool, feats, heads, labels) -> torch.Tensor:
    """Class-wise pooling of the 5 layers -> LeakyReLU -> shared heads -> KL (Eq. 16-18)."""
    mus, lvs, pres = [], [], []
    for f, (fc_mu, fc_var), lab in zip(feats, heads, labels):                     # the 5 encoder layers
        pooled, present = pool(f, lab)
        h = F.leaky_relu(pooled, 0.2)
        mus.append(fc_mu(h)), lvs.append(fc_var(h)), pres.append(present)
    present = torch.stack(pres, 1)                                                 # (B, L, C)
    keep = present[..., None]
    mu = Latents(None, torch.where(keep, torch.stack(mus, 1), 0.0), present)
    lv = Latents(None, torch.where(keep, torch.stack(lvs, 1), 0.0), present)
    return kl_divergence(mu, lv)


def grads(loss, feats, heads):
    params = [*feats, *[p for pair in heads for m in pair for p in m.parameters()]]
    return torch.autograd.grad(loss, params)


def main(argv=None) -> dict:
    a = reference_args(__doc__.split("\n\n")[0], "pooling", "the vectorised version", argv)
    device = a.device
    rows = []
    for B in a.batch:
        feats, heads, labels = make_problem(B, device)
        def loop():
            kl = pooled_kl(pool_loop, feats, heads, labels)
            return kl, grads(kl, feats, heads)
        (kl_l, gl), t_loop = time_once(loop, device)                               # the loop runs once
        kl_v = pooled_kl(pool_vectorised, feats, heads, labels)
        gv = grads(kl_v, feats, heads)
        assert torch.allclose(kl_v, kl_l, rtol=1e-4), (kl_v.item(), kl_l.item())
        assert all(torch.allclose(x, y, rtol=1e-3, atol=1e-5) for x, y in zip(gv, gl)), "gradients differ"
        t_vec = best_time(lambda: grads(pooled_kl(pool_vectorised, feats, heads, labels), feats, heads), device, a.reps)
        classes = [len(l.unique()) for l in labels[0]]
        rows.append({"batch": B, "vectorised_s": t_vec, "loop_s": t_loop, "speedup": t_loop / t_vec,
                     "kl": kl_v.item(), "mean_classes_per_mask_at_1/2": sum(classes) / len(classes)})
    result = {"benchmark": "class-wise max-pooling + heads + KL over 5 encoder layers, forward + backward",
              "config": {"num_classes": C, "z_dim_local": N, "nef": NEF, "encoder_input": SIZE, "layers": LAYERS,
                         "masks": "Voronoi, 17 classes each"},
              "machine": machine(device), "results": rows}
    print(f"class-wise pooling + KL, ADE20K config, forward + backward, on {result['machine']['device']}")
    print("| batch | vectorised (s) | loop reference (s) | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['vectorised_s']:.4f} | {r['loop_s']:.3f} | {r['speedup']:.0f}x |")
    atomic_write_json(result, a.out)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
