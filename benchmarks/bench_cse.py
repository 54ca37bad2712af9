"""CSE latent maps (Eq. 12): gather vs dense one-hot product vs loop reference.

ADE20K generator configuration: 151 classes, N = 151, 256x256 labels, the six CSE blocks' maps
(head_0 at 1/32, G_middle_0/1 at 1/16, up_0 1/8, up_1 1/4, up_2 1/2) from per-sample tables
`W + Z_l` of shape (B, C, N). Each timed step is forward + backward (gradients reach W and the
class codes). Methods:
- gather: `smis.networks.cse_map`, out[b, :, y, x] = table[b, L[b, y, x]] (O(B N h w));
- dense:  einsum of the one-hot mask (B, C, h, w) with the table (O(B C N h w));
- loop:   per sample and present class, paint the class's vector into its region (published code).
All three agree (asserted). Prints a table and writes JSON.

    python benchmarks/bench_cse.py --batch 4 16 --device cpu
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import best_time, machine, reference_args, time_once, voronoi_masks  # noqa: E402 (puts the repo on sys.path)
from smis.networks import BLOCK_LAYER, cse_map, one_hot, resize_labels  # noqa: E402
from smis.utils import atomic_write_json  # noqa: E402

C, N, SIZE, L = 151, 151, 256, 5


def make_problem(B: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    label = voronoi_masks(B, SIZE, generator=g, num_classes=C).to(device)
    W = (torch.randn(C, N, generator=g) * 0.1).to(device).requires_grad_()        # embedding (C, N)
    zc = torch.randn(B, L, C, N, generator=g).to(device).requires_grad_()         # class codes of 5 layers
    labels = {l: resize_labels(label, (SIZE >> l, SIZE >> l)) for l in set(BLOCK_LAYER.values())}
    weights = {name: torch.randn(B, N, SIZE >> l, SIZE >> l, generator=g).to(device)
               for name, l in BLOCK_LAYER.items()}                                 # fixed upstream gradients
    return W, zc, labels, weights


def paint_gather(table, lab):
    return cse_map(table, lab)


def paint_dense(table, lab):
    return torch.einsum("bchw,bcn->bnhw", one_hot(lab, C, table.dtype), table)


def paint_loop(table, lab):
    outs = []
    for b in range(table.shape[0]):
        out = table.new_zeros(N, *lab.shape[-2:])                                 # (N, h, w)
        for c in lab[b].unique().tolist():
            out[:, lab[b] == c] = table[b, c][:, None]
        outs.append(out)
    return torch.stack(outs)


def step(paint, W, zc, labels, weights):
    """Maps of the six CSE blocks -> a weighted sum -> gradients w.r.t. W and the codes."""
    tables = W + zc                                                                # (B, L, C, N)
    loss = 0.0
    for name, l in BLOCK_LAYER.items():
        loss = loss + (paint(tables[:, l - 1], labels[l]) * weights[name]).sum()
    return loss, torch.autograd.grad(loss, (W, zc))


def main(argv=None) -> dict:
    a = reference_args(__doc__.split("\n\n")[0], "cse", "gather and dense", argv)
    device = a.device
    rows = []
    for B in a.batch:
        W, zc, labels, weights = make_problem(B, device)
        (ref_loss, ref_grads), t_loop = time_once(lambda: step(paint_loop, W, zc, labels, weights), device)
        t = {"loop": t_loop}                                                       # the loop runs once
        for name, fn in (("gather", paint_gather), ("dense", paint_dense)):
            loss, gr = step(fn, W, zc, labels, weights)
            assert torch.allclose(loss, ref_loss, rtol=1e-4), (name, loss.item(), ref_loss.item())
            assert all(torch.allclose(x, y, rtol=1e-3, atol=1e-3) for x, y in zip(gr, ref_grads)), name
            t[name] = best_time(lambda fn=fn: step(fn, W, zc, labels, weights), device, a.reps)
        rows.append({"batch": B, "gather_s": t["gather"], "dense_s": t["dense"], "loop_s": t["loop"],
                     "dense_over_gather": t["dense"] / t["gather"], "loop_over_gather": t["loop"] / t["gather"]})
    result = {"benchmark": "CSE maps of the six latent blocks (Eq. 12), forward + backward",
              "config": {"num_classes": C, "z_dim_local": N, "label_size": SIZE, "blocks": BLOCK_LAYER,
                         "masks": "Voronoi, 17 classes each"},
              "machine": machine(device), "results": rows}
    print(f"CSE maps, ADE20K config, forward + backward, on {result['machine']['device']}")
    print("| batch | gather (s) | dense one-hot (s) | loop (s) | dense / gather | loop / gather |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['gather_s']:.4f} | {r['dense_s']:.4f} | {r['loop_s']:.3f} | "
              f"{r['dense_over_gather']:.1f}x | {r['loop_over_gather']:.0f}x |")
    atomic_write_json(result, a.out)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
