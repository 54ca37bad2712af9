"""Official-checkpoint import: state dicts with exactly the published names and shapes (random values).

The names and shapes come from tests/data/official_checkpoint_keys.json, committed (a copy of
../shared/reference/official_checkpoint_keys.json, which a clone does not have)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import smis
from smis.data.fixtures import shared_dir
from smis.official import OFFICIAL_DATASETS, CheckpointMismatch, check_state_dict, load_official
from smis.networks import Latents, resize_labels

REFERENCE = Path(__file__).resolve().parent / "data" / "official_checkpoint_keys.json"  # committed


class Stop(Exception):
    pass


def reference(dataset: str) -> dict:
    """{"options": the published training options, "netG" / "netE": key -> shape, in the files' order}."""
    return json.loads(REFERENCE.read_text())[dataset]


def test_committed_reference_is_whole_and_matches_shared():
    """The committed copy: all three datasets, every G and E key; byte-identical to ../shared's where that exists."""
    data = json.loads(REFERENCE.read_text())
    assert set(data) == set(OFFICIAL_DATASETS)
    for dataset, ref in data.items():
        assert set(ref) == {"options", "netG", "netE"} and (len(ref["netG"]), len(ref["netE"])) == (235, 42), dataset
        assert all(isinstance(s, list) and all(isinstance(d, int) and d > 0 for d in s) for s in ref["netG"].values())
        assert ref["options"]["semantic_nc"] == ref["netG"]["embedding.weight"][0]
    shared = shared_dir() / "reference" / "official_checkpoint_keys.json"
    if shared.is_file():
        assert shared.read_bytes() == REFERENCE.read_bytes(), f"{REFERENCE} differs from {shared}: copy it over"


def random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the published names and shapes; spectral-norm u, v from power iteration
    so the stored sigma is sensible (the published files hold converged vectors too)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith(("weight_u", "weight_v")):
            continue
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    for key in [k for k in shapes if k.endswith("weight_orig")]:
        W = out[key].flatten(1)                                         # (out, in)
        v = torch.randn(W.shape[1], generator=g)
        for _ in range(5):
            u = torch.nn.functional.normalize(W @ v, dim=0)
            v = torch.nn.functional.normalize(W.T @ u, dim=0)
        out[key[:-4] + "u"], out[key[:-4] + "v"] = u, v
    assert set(out) == set(shapes) and all(list(out[k].shape) == shapes[k] for k in shapes)
    return out


@pytest.fixture
def weights_dir(tmp_path):
    """tmp_path for checkpoint files of hundreds of MB, deleted after the test (pytest keeps recent tmp folders)."""
    yield tmp_path
    for path in tmp_path.rglob("*.pth"):
        path.unlink()


def head_output(G, label, z):
    """Output of head_0 (fc + first SPADE block): stops the forward there to stay cheap."""
    got = {}

    def hook(module, args, out):
        got["x"] = out
        raise Stop

    h = G.head_0.register_forward_hook(hook)
    try:
        with torch.no_grad():
            G(label, z)
    except Stop:
        pass
    finally:
        h.remove()
    return got["x"]


def inputs(G, E, seed=0):
    H, W = G.image_size
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, G.spec.num_classes, (1, 1, H // 32, W // 32), generator=g)
    label = resize_labels(coarse[:, 0], (H, W))
    image = torch.rand(1, 3, H, W, generator=g) * 2 - 1
    return label, image


def test_ade20k_files_load_strictly_and_the_values_are_used(weights_dir):
    ref = reference("ade20k")
    sg, se = random_state(ref["netG"], 1), random_state(ref["netE"], 2)
    torch.save(sg, weights_dir / "latest_net_G.pth")
    torch.save(se, weights_dir / "latest_net_E.pth")
    G, E = smis.load_official(weights_dir / "latest_net_G.pth", weights_dir / "latest_net_E.pth", dataset="ade20k")
    assert not G.training and not E.training
    for module, state in ((G, sg), (E, se)):
        ours = module.state_dict()
        assert set(ours) == set(state) and all(torch.equal(ours[k], state[k]) for k in state)

    label, image = inputs(G, E)
    with torch.no_grad():
        mu, logvar = E(image, label)
    assert mu.z.shape == (1, 256) and mu.zc.shape == (1, 5, 151, 151)
    assert torch.isfinite(mu.zc).all() and torch.isfinite(logvar.z).all()
    base = head_output(G, label, mu)
    assert base.shape == (1, 1024, 8, 8) and torch.isfinite(base).all()

    # changing any one published tensor changes what the network computes
    for key in ["fc.weight", "embedding.weight", "head_0.conv_0.weight_u",
                "head_0.norm_0.param_free_norm.running_mean", "head_0.norm_1.mlp_gamma.bias"]:
        t = G.state_dict()[key]
        keep = t.clone()
        t.add_(0.5)
        assert (head_output(G, label, mu) - base).abs().max() > 1e-4, key
        t.copy_(keep)
    assert torch.equal(head_output(G, label, mu), base)
    se2 = dict(se)
    se2["fc_mu3.weight"] = se["fc_mu3.weight"] + 1
    _, E2 = load_official(sg, se2, dataset="ade20k")
    with torch.no_grad():
        mu2, _ = E2(image, label)
    changed = (mu2.zc - mu.zc).abs().amax(dim=(0, 2, 3))               # per latent layer
    assert changed[2] > 1e-3 and (changed[[0, 1, 3, 4]] == 0).all()
    assert torch.equal(mu2.z, mu.z)


@pytest.mark.parametrize("dataset,size", [("gta5", (256, 512)),
                                          pytest.param("deepfashion", (256, 256), marks=pytest.mark.slow)])
def test_other_datasets_load_strictly(dataset, size):
    ref = reference(dataset)
    sg, se = random_state(ref["netG"], 3), random_state(ref["netE"], 4)
    G, E = load_official(sg, se, dataset=dataset)
    assert G.image_size == size
    label, image = inputs(G, E)
    with torch.no_grad():
        mu, _ = E(image, label)
    x = head_output(G, label, mu)
    assert torch.isfinite(x).all() and x.shape[1] == 16 * ref["options"]["ngf"]
    assert x.shape[-2:] == (size[0] // 64, size[1] // 64)              # "more": six upsamplings
    G2, E2 = load_official(sg, None, dataset=dataset)
    assert E2 is None and torch.equal(head_output(G2, label, mu), x)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ade20k", "gta5", "deepfashion"])
def test_full_forward_with_official_shapes(dataset):
    ref = reference(dataset)
    G, E = load_official(random_state(ref["netG"], 5), random_state(ref["netE"], 6), dataset=dataset)
    label, image = inputs(G, E)
    with torch.no_grad():
        mu, _ = E(image, label)
        a = G(label, mu)
        b = G(label, Latents.prior(E.spec, label, torch.Generator().manual_seed(0)))
    assert a.shape == (1, 3, *G.image_size) and torch.isfinite(a).all()
    assert (a - b).abs().max() > 1e-4


def test_mismatch_gives_a_clear_error():
    ref = reference("gta5")
    sg = random_state(ref["netG"], 7)
    bad = dict(sg)
    del bad["up_0.conv_s.weight_u"]
    bad["extra.weight"] = torch.zeros(1)
    bad["embedding.weight"] = torch.zeros(21, 20)
    with pytest.raises(CheckpointMismatch) as err:
        load_official(bad, None, dataset="gta5")
    msg = str(err.value)
    assert "1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert "up_0.conv_s.weight_u" in msg and "extra.weight" in msg
    assert "embedding.weight: checkpoint (21, 20) vs ours (20, 20)" in msg
    with pytest.raises(CheckpointMismatch, match="(?s)ade20k generator.*shape mismatch"):
        load_official(sg, None, dataset="ade20k")                       # the wrong dataset
    with pytest.raises(ValueError, match="choose one of"):
        load_official(sg, None, dataset="cityscapes")
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        load_official("/nonexistent/latest_net_G.pth", None, dataset="gta5")


def test_dataparallel_prefix_is_stripped_and_check_state_dict_passes():
    ref = reference("gta5")
    se = random_state(ref["netE"], 8)
    G, E = load_official(random_state(ref["netG"], 9), {"module." + k: v for k, v in se.items()}, dataset="gta5")
    check_state_dict(E, se)
    assert torch.equal(E.state_dict()["fc_mu5.weight"], se["fc_mu5.weight"])


def test_corrupt_or_hostile_weight_files_are_named_and_refused(tmp_path):
    """The published weights go through smis.utils.safe_load too: weights_only=True, clear errors."""
    import os

    from smis.utils import CorruptCheckpoint, UnsafeCheckpoint

    cut = tmp_path / "latest_net_G.pth"
    torch.save({"fc.weight": torch.zeros(64, 64)}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(CorruptCheckpoint, match=r"latest_net_G\.pth \(200 bytes\) is truncated or corrupt"):
        load_official(cut, None, dataset="deepfashion")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpoint, match=r"evil\.pth was refused"):
        load_official(tmp_path / "evil.pth", None, dataset="deepfashion")
    assert not (tmp_path / "pwned").exists()
