"""The dataset checker: every finding on broken fixtures, histograms, the CLI's exit status, figures."""
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")

from smis.data import DatasetError, ade20k, cityscapes, gta5, make_dataset  # noqa: E402
from smis.data.check import CheckReport, check_dataset, main, plot_class_histogram, plot_samples  # noqa: E402
from smis.data.folder import read_classes_json  # noqa: E402
from smis.data.synthetic import write_synthscenes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
H, W = 16, 32


def label_map(shift: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return ((np.arange(w)[None, :] // 8 + shift) % 4 + 0 * np.arange(h)[:, None]).astype(np.uint8)  # ids 0..3


def save_image(path: Path, h: int = H, w: int = W):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def save_label(path: Path, label: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


@pytest.fixture
def broken_gta5(tmp_path):
    """GTA-5 layout with one clean pair and one of every problem; an empty test split."""
    img, lab = tmp_path / "RGB256Full" / "train", tmp_path / "LabelgrayFull20" / "train"
    save_image(img / "a.png"), save_label(lab / "a.png", label_map(0))          # clean
    save_image(img / "b.png")                                                    # image without label
    save_label(lab / "c.png", label_map(0))                                      # label without image
    img.joinpath("d.png").write_bytes(b"not a png at all")                       # unreadable image
    save_label(lab / "d.png", label_map(1))
    bad = label_map(0)
    bad[3, 5] = 25
    save_image(img / "e.png"), save_label(lab / "e.png", bad)                    # id 25 of 20 classes
    save_image(img / "f.png"), save_label(lab / "f.png", label_map(2, w=W - 2))  # size mismatch
    save_image(img / "g.png")
    save_label(lab / "g.png", label_map(0))
    data = (lab / "g.png").read_bytes()
    (lab / "g.png").write_bytes(data[: len(data) // 2])                          # truncated label
    (tmp_path / "RGB256Full" / "test").mkdir()
    (tmp_path / "LabelgrayFull20" / "test").mkdir()                              # empty split
    return tmp_path


def test_every_finding_on_a_broken_dataset(broken_gta5):
    rep = check_dataset(broken_gta5, "gta5", progress=False)
    assert not rep.ok
    found = {(p.kind, p.split, Path(p.path).relative_to(broken_gta5).as_posix()) for p in rep.problems}
    assert found == {
        ("unpaired", "train", "RGB256Full/train/b.png"),
        ("unpaired", "train", "LabelgrayFull20/train/c.png"),
        ("unreadable", "train", "RGB256Full/train/d.png"),
        ("id_out_of_range", "train", "LabelgrayFull20/train/e.png"),
        ("size_mismatch", "train", "LabelgrayFull20/train/f.png"),
        ("unreadable", "train", "LabelgrayFull20/train/g.png"),
        ("empty_split", "test", "RGB256Full/test"),
    }
    assert rep.counts() == {"unpaired": 2, "unreadable": 2, "id_out_of_range": 1, "size_mismatch": 1, "empty_split": 1}
    msg = {p.kind: p.message for p in rep.problems}
    assert "[25]" in msg["id_out_of_range"] and "0..19" in msg["id_out_of_range"] and "Fix:" in msg["id_out_of_range"]
    assert "16x32" in msg["size_mismatch"] and "16x30" in msg["size_mismatch"]
    tr = rep.splits["train"]
    assert (tr.n_images, tr.n_labels, tr.n_pairs, tr.n_checked) == (6, 6, 5, 5)
    # rows follow the dataset order a, d, e, f, g; e (bad id) and g (unreadable) have no counts
    rows = tr.per_image
    per_class = H * W // 4
    assert rows.shape == (5, 20)
    assert rows[0, :4].tolist() == [per_class] * 4 and rows[1, :4].tolist() == [per_class] * 4
    assert rows[2].sum() == 0 and rows[4].sum() == 0 and rows[3].sum() == H * (W - 2)
    assert rep.histogram("train")[:4].sum() == 2 * H * W + H * (W - 2) and rep.histogram()[4:].sum() == 0
    md = rep.to_markdown()
    for text in ("7 problem(s)", "## unpaired (2)", "## unreadable (2)", "## id_out_of_range (1)",
                 "## size_mismatch (1)", "## empty_split (1)", "b.png", "e.png", "| train | 6 | 6 | 5 | 5 |"):
        assert text in md, text


def test_missing_split_and_clean_dataset(tmp_path):
    for name in ("x", "y"):
        save_image(tmp_path / "RGB256Full" / "train" / f"{name}.png")
        save_label(tmp_path / "LabelgrayFull20" / "train" / f"{name}.png", label_map(1))
    rep = check_dataset(tmp_path, "gta5", progress=False)
    assert [(p.kind, p.split) for p in rep.problems] == [("missing_split", "test")]
    assert "RGB256Full/test does not exist" in rep.problems[0].message
    clean = check_dataset(tmp_path, "gta5", splits=["train"], progress=False)
    assert clean.ok and "OK: no problems found" in clean.to_markdown()
    assert clean.histogram("train")[:4].tolist() == [2 * H * W // 4] * 4
    assert len(make_dataset("gta5", tmp_path, "train")) == 2  # what the checker passes, the loader reads


def test_workers_give_the_same_report(broken_gta5):
    a = check_dataset(broken_gta5, "gta5", progress=False)
    b = check_dataset(broken_gta5, "gta5", num_workers=2, progress=False)
    assert sorted(map(vars, a.problems), key=str) == sorted(map(vars, b.problems), key=str)
    assert np.array_equal(a.per_image_histograms("train"), b.per_image_histograms("train"))


def test_max_files_opens_only_the_first(broken_gta5):
    rep = check_dataset(broken_gta5, "gta5", splits=["train"], max_files=1, progress=False)
    assert rep.splits["train"].n_checked == 1 and rep.splits["train"].n_pairs == 5
    assert rep.counts() == {"unpaired": 2}  # listing problems are still found; d..g were not opened


def test_ade20k_raw_ids_beyond_the_table(tmp_path):
    img, lab = tmp_path / "images" / "training", tmp_path / "annotations" / "training"
    raw = label_map(0)
    raw[0, 0] = 151
    save_image(img / "ADE_train_1.jpg"), save_label(lab / "ADE_train_1.png", raw)
    rep = check_dataset(tmp_path, "ade20k", splits=["train"], progress=False)
    assert [p.kind for p in rep.problems] == ["id_out_of_range"] and "[151]" in rep.problems[0].message


def test_ade20k_is_clean_and_unknown_is_counted_as_150(ade20k_source):
    """The generated ADE20K, and the real samples where ../shared/samples exists."""
    root = ade20k_source.root
    rep = check_dataset(root, "ade20k", progress=False)
    assert rep.ok and {s: r.n_pairs for s, r in rep.splits.items()} == ade20k_source.pairs
    pixels = sum(h * w * n for r in rep.splits.values() for (h, w), n in r.sizes.items())
    assert rep.histogram().sum() == pixels
    unknown = sum(int((np.asarray(Image.open(p)) == 0).sum()) for p in (root / "annotations").rglob("*.png"))
    assert rep.histogram()[150] == unknown > 0


# label files of each paper format (glob under the root) and the raw id -> class id table the checker applies
LABEL_FILES = {"ade20k": ("annotations/*/*.png", ade20k.LUT),
               "deepfashion": ("*/*_label.png", None),
               "gta5": ("LabelgrayFull20/*/*.png", gta5.LUT),
               "cityscapes": ("gtFine/*/*/*_gtFine_labelIds.png", cityscapes.LUT)}


@pytest.mark.parametrize("fmt", sorted(LABEL_FILES))
def test_paper_format_fixtures_are_clean_with_exact_histograms(fmt, request):
    """Every generated paper dataset passes; each split's histogram is the bincount of its mapped label files."""
    root = request.getfixturevalue(f"{fmt}_root")
    rep = check_dataset(root, fmt, progress=False)
    assert rep.ok, rep.to_markdown()
    pattern, lut = LABEL_FILES[fmt]
    C = rep.info.num_classes
    expected = np.zeros(C, np.int64)
    for path in root.glob(pattern):
        ids = np.asarray(Image.open(path), dtype=np.int64)
        expected += np.bincount((lut[ids] if lut is not None else ids).ravel(), minlength=C)
    assert np.array_equal(rep.histogram(), expected)
    occurs = expected > 0
    assert occurs[[0, 149, 150]].all() if fmt == "ade20k" else occurs.all()  # ADE20K: 151 classes in 6 small maps
    assert sum(r.n_checked for r in rep.splits.values()) == len(list(root.glob(pattern))) == 6


def test_folder_and_synthscenes_formats(tmp_path):
    root = tmp_path / "folder"
    (root / "train" / "images").mkdir(parents=True)
    save_image(root / "train" / "images" / "a.png")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, W // 2:] = (255, 0, 0)
    (root / "train" / "labels").mkdir()
    Image.fromarray(rgb).save(root / "train" / "labels" / "a.png")
    with pytest.raises(DatasetError, match="no classes.json"):
        check_dataset(root, "folder", progress=False)
    (root / "classes.json").write_text(json.dumps({"names": ["bg", "red"], "palette": [[0, 0, 0], [255, 0, 0]]}))
    rep = check_dataset(root, "folder", progress=False)
    assert rep.ok and rep.histogram().tolist() == [H * W // 2] * 2
    rgb[0, 0] = (0, 255, 0)  # a colour that is not in the palette
    Image.fromarray(rgb).save(root / "train" / "labels" / "a.png")
    rep = check_dataset(root, "folder", progress=False)
    assert [p.kind for p in rep.problems] == ["unreadable"] and "(0, 255, 0)" in rep.problems[0].message

    synth = write_synthscenes(tmp_path / "synth", n_train=2, n_test=1, size=64, progress=False)
    rep = check_dataset(synth, "synthscenes", progress=False)
    assert rep.ok and {s: r.n_pairs for s, r in rep.splits.items()} == {"train": 2, "test": 1}
    assert rep.histogram().sum() == 3 * 64 * 64


def test_cli_exit_status_json_and_figure(broken_gta5, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(broken_gta5), "--format", "gta5", "--quiet", "--json", str(out / "r.json"),
                 "--figure", str(out / "h.png")]) == 1
    assert "## size_mismatch (1)" in capsys.readouterr().out
    saved = json.loads((out / "r.json").read_text())
    assert saved["ok"] is False and saved["counts"]["unpaired"] == 2 and len(saved["class_names"]) == 20
    assert Image.open(out / "h.png").size[0] > 100
    assert main([str(broken_gta5), "--format", "gta5", "--quiet", "--splits", "nope"]) == 1  # missing split
    assert main([str(tmp_path / "absent"), "--format", "gta5", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_as_a_module(tmp_path):
    save_image(tmp_path / "RGB256Full" / "train" / "a.png")
    save_label(tmp_path / "LabelgrayFull20" / "train" / "a.png", label_map(0))
    cmd = [sys.executable, "-m", "smis.data.check", str(tmp_path), "--format", "gta5", "--quiet"]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # the test split is missing
    assert bad.returncode == 1 and "## missing_split (1)" in bad.stdout and "| train | 1 | 1 | 1 | 1 |" in bad.stdout


def test_figures(tmp_path):
    for name in ("x", "y", "z"):
        save_image(tmp_path / "RGB256Full" / "train" / f"{name}.png")
        save_label(tmp_path / "LabelgrayFull20" / "train" / f"{name}.png", label_map(2))
    rep = check_dataset(tmp_path, "gta5", splits=["train"], progress=False)
    assert isinstance(rep, CheckReport)
    fig = plot_class_histogram(rep, "train", path=tmp_path / "figs" / "hist.png")
    assert (tmp_path / "figs" / "hist.png").stat().st_size > 0 and len(fig.axes[0].patches) == 20
    ds = make_dataset("gta5", tmp_path, "train", size=(H, W))
    fig = plot_samples(ds, n=2, path=tmp_path / "figs" / "samples.png")
    assert len(fig.axes) == 4 and Image.open(tmp_path / "figs" / "samples.png").size[0] > 50
    assert not list((tmp_path / "figs").glob(".*.tmp"))  # atomic writes leave no temporaries


# ---- classes.json validation (one reader for the loader and the checker) -------------------------

NAMES4 = ["bg", "red", "green", "blue"]
PAL4 = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def pal4_with(i: int, colour) -> dict:
    """classes.json of NAMES4 whose palette entry i is `colour`."""
    return {"names": NAMES4, "palette": PAL4[:i] + [colour] + PAL4[i + 1:]}


BAD_CLASSES_JSON = {   # id: (classes.json content, what the error must say)
    "list_not_object": (NAMES4, r"holds a JSON list .*not an object.*Fix: wrap the list as \{\"names\": \[\.\.\.\]\}"),
    "names_missing": ({"palette": PAL4}, r"'names' is null, not a non-empty list"),
    "name_not_string": ({"names": ["bg", 1, "g", "b"]}, r"'names'\[1\] is 1, not a non-empty string"),
    "palette_int": ({"names": NAMES4, "palette": 5}, r"'palette' is 5, not a list"),
    "colour_float": (pal4_with(2, [0, 127.5, 0]),
                     r"'palette'\[2\] \(class 2\) is \[0, 127\.5, 0\]; colour values must be integers in 0\.\.255"),
    "colour_over_255": (pal4_with(3, [0, 0, 256]), r"'palette'\[3\] \(class 3\) is \[0, 0, 256\]"),
    "colour_negative": (pal4_with(0, [-1, 0, 0]), r"'palette'\[0\] \(class 0\) is \[-1, 0, 0\]"),
    "colour_bool": (pal4_with(0, [True, 0, 0]), r"'palette'\[0\] \(class 0\) is \[true, 0, 0\]"),
    "colour_length_2": (pal4_with(1, [255, 0]), r"'palette'\[1\] \(class 1\) is \[255, 0\], not \[r, g, b\]"),
    "colour_not_list": (pal4_with(1, "#ff0000"), r"'palette'\[1\] \(class 1\) is \"#ff0000\""),
    "duplicate_colour": (pal4_with(3, [255, 0, 0]),
                         r"'palette'\[3\] \(class 3\) repeats the colour \[255, 0, 0\] of class 1"
                         r".*Fix: give every class"),
    "palette_too_short": ({"names": NAMES4, "palette": PAL4[:3]},
                          r"one \[r, g, b\] per class \(4 names\), got 3 entries"),
    "dontcare_too_big": ({"names": NAMES4, "dontcare": 4}, r"'dontcare' is 4, not a class id in 0\.\.3"),
    "dontcare_negative": ({"names": NAMES4, "dontcare": -1}, r"'dontcare' is -1, not a class id in 0\.\.3"),
    "dontcare_string": ({"names": NAMES4, "dontcare": "3"}, r"'dontcare' is \"3\", not a class id in 0\.\.3"),
}


def folder_dataset(root: Path, classes) -> Path:
    """A clean one-pair folder dataset (id labels 0..3) with `classes` written as its classes.json."""
    save_image(root / "train" / "images" / "a.png")
    save_label(root / "train" / "labels" / "a.png", label_map(0))
    (root / "classes.json").write_text(json.dumps(classes))
    return root


@pytest.mark.parametrize("case", sorted(BAD_CLASSES_JSON))
def test_bad_classes_json_is_one_clear_error_for_loader_and_checker(tmp_path, capsys, case):
    classes, message = BAD_CLASSES_JSON[case]
    root = folder_dataset(tmp_path / "ds", classes)
    with pytest.raises(DatasetError, match=message) as e:
        make_dataset("folder", root, "train")
    assert str(root / "classes.json") in str(e.value) and "Fix:" in str(e.value)
    with pytest.raises(DatasetError, match=message):
        check_dataset(root, "folder", progress=False)
    assert main([str(root), "--format", "folder", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(root / "classes.json") in err and "Traceback" not in err


def test_valid_classes_json_edges_are_accepted_and_normalised(tmp_path):
    pal = [[0, 0, 0], [255, 255, 255], [0, 0, 1], [1, 0, 0]]
    root = folder_dataset(tmp_path / "ds", {"names": NAMES4, "palette": pal, "dontcare": 3})
    assert read_classes_json(root) == {"names": tuple(NAMES4), "palette": tuple(map(tuple, pal)), "dontcare": 3}
    assert read_classes_json(tmp_path) is None                          # no file: not an error
    rep = check_dataset(root, "folder", progress=False)
    assert rep.ok and rep.info.dontcare == 3 and rep.info.palette[1] == (255, 255, 255)
    assert make_dataset("folder", root, "train").info == rep.info


def test_cli_module_exits_2_without_a_traceback_on_a_list_classes_json(tmp_path):
    root = folder_dataset(tmp_path / "ds", NAMES4)
    r = subprocess.run([sys.executable, "-m", "smis.data.check", str(root), "--format", "folder", "--quiet"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "holds a JSON list" in r.stderr and "Fix:" in r.stderr


def test_synthscenes_check_reads_classes_json_like_the_loader(tmp_path):
    root = write_synthscenes(tmp_path / "synth", n_train=1, n_test=1, size=64, progress=False)
    meta = json.loads((root / "classes.json").read_text())
    meta["palette"][1] = meta["palette"][0]
    (root / "classes.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="repeats the colour"):
        make_dataset("synthscenes", root, "train")
    with pytest.raises(DatasetError, match="repeats the colour"):
        check_dataset(root, "synthscenes", progress=False)


# ---- --max-files and "checked nothing" -----------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_cli_max_files_must_be_at_least_one(broken_gta5, capsys, value):
    with pytest.raises(SystemExit) as e:
        main([str(broken_gta5), "--format", "gta5", "--quiet", "--max-files", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--max-files" in err and ">= 1" in err and "Traceback" not in err


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_check_dataset_rejects_max_files_below_one(broken_gta5, value):
    with pytest.raises(ValueError, match=r"max_files=.* Fix: pass an int >= 1"):
        check_dataset(broken_gta5, "gta5", max_files=value, progress=False)


def test_checking_zero_pairs_is_never_ok(tmp_path, capsys):
    save_image(tmp_path / "RGB256Full" / "train" / "a.png")          # an image without its label: no pair to open
    (tmp_path / "LabelgrayFull20" / "train").mkdir(parents=True)
    rep = check_dataset(tmp_path, "gta5", splits=["train"], progress=False)
    assert rep.splits["train"].n_checked == 0 and not rep.ok
    assert rep.counts() == {"unpaired": 1, "nothing_checked": 1}
    msg = next(p.message for p in rep.problems if p.kind == "nothing_checked")
    assert "no image/label pair was opened" in msg and "Fix:" in msg
    assert main([str(tmp_path), "--format", "gta5", "--quiet", "--splits", "train"]) == 1
    assert "## nothing_checked (1)" in capsys.readouterr().out
