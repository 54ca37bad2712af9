"""The README's SynthScenes results, computed from a demo run (not pasted): reads the tables a
`python -m smis.reproduce --profile demo` run wrote and the shipped models' curves, and rewrites the block
between the `demo-results` markers of README.md, plus docs/demo_results.json (the numbers rendered).

    bash run.sh demo && python scripts/demo_results.py outputs/demo
    python scripts/demo_results.py outputs/demo --check     # exit 1 if README's block differs from the run
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.capabilities import capabilities  # noqa: E402
from smis.comparison import CO_CHANGE, REFERENCE  # noqa: E402
from smis.curves import SCORES, plateau_table  # noqa: E402
from smis.networks import VARIANTS  # noqa: E402
from smis.evaluate import Columns  # noqa: E402
from smis.tables import COLOUR_IN, COLOUR_MATCH, MIOU, MIOU_HIGH, MIOU_LOW, TEXTURE_IN, TEXTURE_MATCH  # noqa: E402
START, END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def _ci(row, col) -> str:
    return f"{row[col]:.3f} ± {row[Columns.ci(col)]:.3f}"


def _miou(row) -> str:
    return f"{row[MIOU]:.3f} [{row[MIOU_LOW]:.3f}, {row[MIOU_HIGH]:.3f}]"


def _no_rec(name: str) -> str:
    """Why a Table 2 row has no reconstruction: the system cannot encode, or notebook 03 does not run it."""
    return "no encoder" if name in VARIANTS and not capabilities(name)["reconstruction"] else "not in notebook 03"


def _diff(r) -> str:
    """A paired difference with its interval (a point value where there is none)."""
    if pd.isna(r["CI low"]):
        return f"{r['difference']:+.2f} (no interval)"
    return f"{r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}]"


def systems(d: dict, cols: Columns) -> list[str]:
    """Every system against clvae and the paper's statements about the comparison systems (issue 21); nothing
    for a run made before them."""
    if "versus" not in d:
        return []
    v = pd.DataFrame(d["versus"]).set_index(["system", "score"])
    scores = [(cols.diversity, "diversity"), (cols.top1, "top-1 GT-similarity"), (cols.fd, "FD"),
              (MIOU, "mask mIoU"), (COLOUR_IN, "colour in class modes (points)"),
              (TEXTURE_IN, "texture in class set (points)")]
    out = ["", f"**Every system minus {REFERENCE}** (paired over the same masks and seeds, 95 % interval; FD: "
           "paired leave-one-mask-out jackknife):", "",
           "| system | " + " | ".join(name for _, name in scores) + " |", "|---" * (len(scores) + 1) + "|"]
    for system in v.index.get_level_values("system").unique():
        r = v.loc[system]
        out.append(f"| {system} | " + " | ".join(_diff(r.loc[s]) if s in r.index else "-" for s, _ in scores) + " |")
    if "class_independence" in d:
        ci = pd.DataFrame(d["class_independence"]).set_index("system")
        out += ["", "Class co-change rate (when one class changes colour mode between two samples of a mask, the "
                "share of the other classes that change too; 1: global colour changes): " + "; ".join(
                    f"{s} {r[CO_CHANGE]:.3f} ± {r[Columns.ci(CO_CHANGE)]:.3f}" for s, r in ci.iterrows()) + "."]
    if "groupdnet_bins" in d:
        b = pd.DataFrame(d["groupdnet_bins"]).set_index("classes in the mask")
        out += ["", "Diversity by the number of classes in the mask, groupdnet vs clvae (masks): " + "; ".join(
            f"{int(c)}: {r['groupdnet']:.3f} vs {r['clvae']:.3f} ({int(r['masks'])})" for c, r in b.iterrows()) + "."]
    if "statements" in d:
        st = pd.DataFrame(d["statements"])
        out += ["", "The paper's statements about the comparison systems (this run):", ""]
        out += ["- " + t for t in st["text"] if isinstance(t, str) and t]
    return out


def collect_systems(folder: Path) -> dict:
    """Issue 21's tables of notebook 04 (`folder`): every system vs clvae, the statements, the class co-change
    rates and GroupDNet's diversity by class count, as records; {} for a run made before them."""
    out = {}
    for key, stem, index in (("versus", "systems_vs_clvae", [0, 1]), ("statements", "statements", [0, 1]),
                             ("class_independence", "class_independence", 0),
                             ("groupdnet_bins", "groupdnet_diversity_by_classes", 0)):
        path = folder / f"{stem}.csv"
        if path.is_file():
            out[key] = pd.read_csv(path, index_col=index).reset_index().to_dict("records")
    return out


def collect(run: Path) -> dict:
    """The numbers of one demo run (plain data)."""
    t1 = pd.read_csv(run / "03_reconstruction_rq1" / "table1_reconstruction.csv", index_col=0)
    t2 = pd.read_csv(run / "04_diversity_rq2" / "table2_diversity_top1.csv", index_col=0)
    paired = pd.read_csv(run / "04_diversity_rq2" / "paired_clvae_vs_baseline.csv", index_col=0)
    factors = pd.read_csv(run / "04_diversity_rq2" / "factors_in_distribution.csv", index_col=0)
    style = pd.read_csv(run / "04_diversity_rq2" / "style_guided_factors.csv", index_col=0)
    t5 = pd.read_csv(run / "05_ablations" / "table5_ablations.csv", index_col=0)
    order = pd.read_csv(run / "05_ablations" / "table5_ordering.csv", index_col=0)
    layers = pd.read_csv(run / "06_interactive_editing" / "layer_effects.csv", index_col=0)
    locality = pd.read_csv(run / "06_interactive_editing" / "edit_locality.csv", index_col=0)
    timings = json.loads((run / "timings.json").read_text())
    return {"run": str(run), "timings_s": timings, **collect_systems(run / "04_diversity_rq2"),
            "table1": t1.reset_index().to_dict("records"), "table2": t2.reset_index().to_dict("records"),
            "paired": paired.reset_index().to_dict("records"), "factors": factors.reset_index().to_dict("records"),
            "style": style.reset_index().to_dict("records"), "table5": t5.reset_index().to_dict("records"),
            "ordering": order.reset_index().to_dict("records"), "layers": layers.reset_index().to_dict("records"),
            "locality": locality.reset_index().to_dict("records")}


def _verdict(lo: float, hi: float, sign: int = 1) -> str:
    """holds when the interval of the (signed) difference lies above 0, fails below, else not resolved."""
    lo, hi = sorted((sign * lo, sign * hi))
    return "**holds**" if lo > 0 else "**does not hold** (the opposite is resolved)" if hi < 0 else "**not resolved**"


def claims(d: dict, cols: Columns) -> list[str]:
    """The paper's claims, each with its verdict on this run's intervals."""
    div, top, gt = cols.diversity, cols.top1, cols.gt_similarity
    p = pd.DataFrame(d["paired"]).set_index("score")
    t1 = pd.DataFrame(d["table1"]).set_index("variant")
    la = pd.DataFrame(d["layers"]).set_index("layer")
    o = pd.DataFrame(d["ordering"]).set_index("paper's claim")
    lines = ["Which of the paper's claims hold on SynthScenes (this run):", ""]
    r = p.loc[div]
    lines.append(f"- *clvae is more diverse than gaugan_vae* (Table 2): {_verdict(r['CI low'], r['CI high'])}, "
                 f"{r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}].")
    r = p.loc[top]
    lines.append("- *at no loss of top-1 GT-similarity* (lower is closer): "
                 + ("**does not hold**" if r["CI low"] > 0 else "**holds**") + ", clvae minus gaugan_vae "
                 f"{r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}]: "
                 + ("clvae's closest sample is closer" if r["CI high"] < 0 else "clvae's closest sample is further"
                    if r["CI low"] > 0 else "no resolved difference") + ".")
    if MIOU in p.index:
        r = p.loc[MIOU]
        lines.append("- *and at no loss of mask fidelity* (mask mIoU, higher follows the mask): "
                     + ("**does not hold**" if r["CI high"] < 0 else "**holds**") + ", clvae minus gaugan_vae "
                     f"{r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}].")
    if "clvae" in t1.index and "gaugan_vae" in t1.index:
        a, b = t1.loc["clvae"], t1.loc["gaugan_vae"]
        lines.append(f"- *clvae reconstructs closer* (Table 1, {gt}, lower is closer): "
                     f"{a[gt]:.3f} ± {a[Columns.ci(gt)]:.3f} vs {b[gt]:.3f} ± {b[Columns.ci(gt)]:.3f}.")
    held = int((o["verdict"] == "holds").sum())
    lines.append("- *Table 5 ordering full > L5 > w/o layer-wise > L3 > w/o class-wise on diversity*: "
                 f"{held} of {len(o)} neighbouring steps hold ("
                 + "; ".join(f"{k}: {r['verdict']}" for k, r in o.iterrows()) + ").")
    deep, fine = la.iloc[-1], la.iloc[0]
    split = (deep["colour mode changed"] > deep["texture kind changed"]
             and fine["texture kind changed"] > deep["texture kind changed"])
    collapsed = [int(l) for l, r in la.iterrows() if r["KL"] < 0.05]
    lines.append("- *coarse codes move colour, fine codes move texture* (Sec. 4.4.3): "
                 + ("**holds**" if split else "**does not hold**")
                 + ": the coarsest latent layer changes the colour mode "
                 f"in {100 * deep['colour mode changed']:.0f} % of edits, "
                 f"the finest in {100 * fine['colour mode changed']:.0f} % "
                 f"(texture kind {100 * fine['texture kind changed']:.0f} %)"
                 + (f"; latent layers {collapsed} have collapsed to the prior (KL < 0.05)." if collapsed else "."))
    return lines


def render(d: dict, curves: dict | None) -> str:
    """Markdown of the results block."""
    t1 = pd.DataFrame(d["table1"]).set_index("variant")
    t2 = pd.DataFrame(d["table2"]).set_index("variant")
    cols = Columns.of(t2)
    lp, fdn = cols.metric, cols.fd_name
    div, top, gt, fd = cols.diversity, cols.top1, cols.gt_similarity, cols.fd
    factors = pd.DataFrame(d["factors"]).set_index("source")
    minutes = sum(d["timings_s"].values()) / 60
    out = [f"Computed by `python scripts/demo_results.py` from the demo run (`bash run.sh demo`, {minutes:.1f} "
           "min: " + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in d["timings_s"].items()) + "). Scores are "
           f"`{lp}` / `{fdn}`"
           + (" (EfficientNet-Lite0 stand-ins: compare across rows, never with the paper's LPIPS / FID)"
              if "effnet" in lp + fdn else "") + "; ± = 95 % interval over masks, [ ] = bootstrap "
           "interval of the pooled mask mIoU.", "",
           "| variant | diversity (higher: more varied) | top-1 GT-similarity (lower: closer) | FD of samples "
           "| mask mIoU of samples | colour in class modes | texture in class set | reconstruction GT-similarity "
           "| reconstruction mask mIoU |",
           "|---|---|---|---|---|---|---|---|---|"]
    for v in [i for i in t2.index if not i.startswith("real")]:
        r, f = t2.loc[v], factors.loc[v] if v in factors.index else None
        rec = t1.loc[v] if v in t1.index else None
        out.append(f"| {v} | {_ci(r, div)} | {_ci(r, top)} | {r[fd]:.1f} | {_miou(r)} | "
                   + (f"{f[COLOUR_IN]:.1f} % | {f[TEXTURE_IN]:.1f} % | " if f is not None else "- | - | ")
                   + (f"{_ci(rec, gt)} | {_miou(rec)} |" if rec is not None else f"- ({_no_rec(v)}) | - |"))
    real = t2.loc[[i for i in t2.index if i.startswith("real")][0]]
    rf = factors.loc[[i for i in factors.index if i.startswith("real")][0]]
    out.append(f"| real test images | | | | {_miou(real)} | {rf[COLOUR_IN]:.1f} % | "
               f"{rf[TEXTURE_IN]:.1f} % | | |")
    p = pd.DataFrame(d["paired"]).set_index("score")
    out += ["", *claims(d, cols)]
    out += systems(d, cols)
    out += ["", "Paired over the same masks and seeds, clvae minus gaugan_vae: " + "; ".join(
        f"{s} {r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}]" for s, r in p.iterrows()) + "."]
    st = pd.DataFrame(d["style"]).set_index("method")
    out += ["", "Style-guided synthesis, share of shared classes taking the reference's colour mode / texture kind: "
            + "; ".join(f"{m} {r[COLOUR_MATCH]:.0f} % / {r[TEXTURE_MATCH]:.0f} %" for m, r in st.iterrows()) + "."]
    t5 = pd.DataFrame(d["table5"]).set_index("variant")
    out += ["", "**Table 5** (ablations, shipped models, same masks and seeds):", "",
            "| variant | diversity | top-1 GT-similarity | FD | mask mIoU | colour in class modes "
            "| reconstruction GT-similarity |",
            "|---|---|---|---|---|---|---|"]
    for v, r in t5.iterrows():
        if v.startswith("real"):
            continue
        out.append(f"| {v} | {_ci(r, div)} | {_ci(r, top)} | {r[fd]:.1f} | {_miou(r)} | {r[COLOUR_IN]:.1f} % | "
                   f"{_ci(r, 'reconstruction ' + gt)} |")
    o = pd.DataFrame(d["ordering"]).set_index("paper's claim")
    out += ["", "The paper's diversity ordering, pair by pair (paired difference, 95 % interval): " + "; ".join(
        f"{k}: **{r['verdict']}** ({r['difference']:+.3f} [{r['CI low']:.3f}, {r['CI high']:.3f}])"
        for k, r in o.iterrows()) + "."]
    la = pd.DataFrame(d["layers"]).set_index("layer")
    out += ["", "**Layer table** (clvae; resample one class's code at one latent layer; 0 = fine ... 4 = coarse):", "",
            "| latent layer | encoder layer | generator blocks | colour shift | colour mode changed "
            "| texture kind changed | KL | mean abs(mu) |",
            "|---|---|---|---|---|---|---|---|"]
    for l, r in la.iterrows():
        out.append(f"| {l} | {int(r['encoder layer'])} | {r['generator blocks']} | {r['colour shift']:.3f} | "
                   f"{100 * r['colour mode changed']:.1f} % | {100 * r['texture kind changed']:.1f} % | "
                   f"{r['KL']:.3f} | {r['mean |mu|']:.3f} |")
    loc = pd.DataFrame(d["locality"]).set_index("model")
    out += ["", "Edit locality (resample one class's codes at every layer): " + "; ".join(
        f"{m}: {100 * r['inside']:.0f} % of the change inside the object, {100 * r['near']:.0f} % within 2 px "
        f"(object area {100 * r['area']:.0f} %)" for m, r in loc.iterrows()) + "."]
    if curves:
        pt = plateau_table(pd.DataFrame(curves["rows"]))
        out += ["", f"**Training curves** (`checkpoints/synthscenes_curves.json`, {curves['masks']} masks x "
                f"{curves['k']} samples per checkpoint; figure `docs/training_curves.png`): change over the last "
                "quarter of training as a share of the run's range (small: flattened).", "",
                "| variant | steps | checkpoints | diversity | FD | colour in class modes | texture in class set "
                "| mask mIoU |",
                "|---|---|---|---|---|---|---|---|"]
        for v, r in pt.iterrows():
            out.append(f"| {v} | {int(r['steps'])} | {int(r['checkpoints'])} | " + " | ".join(
                f"{r[s]:.3g} ({100 * r[s + ': share of range']:.0f} %)" for s in SCORES) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the demo profile's folder, e.g. outputs/demo")
    p.add_argument("--curves", default="checkpoints/synthscenes_curves.json")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--json", default="docs/demo_results.json")
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if README differs")
    a = p.parse_args(argv)
    run = Path(a.run)
    curves_path = ROOT / a.curves
    curves = json.loads(curves_path.read_text()) if curves_path.is_file() else None
    data = collect(run)
    block = render(data, curves)
    readme = ROOT / a.readme
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block; add the two markers where the results go")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + START + "\n" + block + END + tail
    if a.check:
        return 0 if new == text else 1
    readme.write_text(new)
    (ROOT / a.json).write_text(json.dumps({"data": data, "curves_file": a.curves}, indent=1, default=float) + "\n")
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
