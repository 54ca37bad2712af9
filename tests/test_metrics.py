"""Tests for smis/metrics.py: LPIPS with cached features, diversity, Frechet distance, histograms."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smis import metrics as M
from smis.backbones import ALEXNET_FILE


class Identity(nn.Module):
    """A 1-layer 'backbone' whose only feature map is the image itself."""

    def forward(self, x):
        return [x]


@pytest.fixture(scope="module")
def lpips_rand():
    """The lpips package's AlexNet LPIPS with its shipped linear layers and a random trunk (no download)."""
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)


@pytest.fixture(scope="module")
def effnet():
    return M.LPIPS("effnet", device="cpu")


def _images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1   # (n, 3, size, size) in [-1, 1]


# ---- LPIPS ---------------------------------------------------------------------------------------

def test_identical_images_have_zero_distance(effnet):
    x = _images(3)
    assert torch.allclose(effnet.distance(x, x), torch.zeros(3, dtype=torch.float32), atol=1e-6)
    d = effnet.pairwise(effnet.features(torch.cat([x, x[:1]])))      # image 0 twice
    assert d[0, 3].item() == pytest.approx(0.0, abs=1e-9)
    assert d[0, 1].item() > 0.1


def test_hand_computed_identity_backbone():
    metric = M.LPIPS(Identity(), device="cpu", name="lpips_pixels")
    assert metric.name == "lpips_pixels"
    # Two 1 x 2 images. Pixel 1: (1, 0, 0) vs (0.5, 0, 0): same direction after unit-normalising,
    # distance 0. Pixel 2: (0, 1, 0) vs (0, 0, -1): unit vectors, |e2 + e3|^2 = 2. Mean over pixels = 1.
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])      # (1, 3, 1, 2)
    y = torch.tensor([[[[0.5, 0.0]], [[0.0, 0.0]], [[0.0, -1.0]]]])
    assert metric.distance(x, y).item() == pytest.approx(1.0, abs=1e-6)
    # Opposite directions: |e1 - (-e1)|^2 = 4 on both pixels.
    assert metric.distance(x[:, :, :, :1], -x[:, :, :, :1]).item() == pytest.approx(4.0, abs=1e-6)
    d = metric.pairwise(metric.features(torch.cat([x, y])))
    assert d[0, 1].item() == pytest.approx(1.0, abs=1e-9) and d[1, 0].item() == pytest.approx(1.0, abs=1e-9)


def test_cached_pairwise_equals_lpips_package(lpips_rand):
    metric = M.LPIPS(lpips_rand, device="cpu")
    assert metric.name == "lpips_alex_randtrunk"
    x = _images(7, size=64, seed=1)
    i, j = torch.triu_indices(7, 7, offset=1)
    with torch.no_grad():
        expected = lpips_rand(x[i], x[j]).flatten().double()        # the package's own forward
    d = metric.pairwise(metric.features(x, batch_size=3))
    torch.testing.assert_close(d[i, j], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(d, d.T)
    torch.testing.assert_close(metric.pairwise(metric.features(x), chunk_elements=1000), d)   # 1 channel a chunk
    assert M.diversity(x, metric) == pytest.approx(expected.mean().item(), abs=1e-5)
    torch.testing.assert_close(metric.distance(x[i], x[j]).double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(M.pairwise_by_calls(x, metric, pairs_per_call=5), d, atol=1e-5, rtol=0)


def test_auto_falls_back_to_effnet_without_alexnet(hub_dir):
    metric = M.LPIPS("auto", device="cpu")
    assert metric.name == "lpips_effnet"
    assert len(metric.features(_images(1))) == 5


def test_alex_from_hub_cache_is_named_lpips_alex(hub_dir):
    from torchvision.models import alexnet

    torch.manual_seed(3)
    reference = alexnet(weights=None).eval()
    torch.save(reference.state_dict(), hub_dir / "checkpoints" / ALEXNET_FILE)
    metric = M.LPIPS("auto", device="cpu")
    assert metric.name == "lpips_alex"
    x = _images(2, size=64)
    feats = metric.features(x)
    h = metric.trunk.scaling_layer(x)
    with torch.no_grad():
        expected = [reference.features[:i + 1](h) for i in (1, 4, 7, 9, 11)]   # relu1 ... relu5
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f, M.unit_normalize(e))
    with torch.no_grad():
        torch.testing.assert_close(metric.distance(x[:1], x[1:]), metric.trunk(x[:1], x[1:]).flatten())


def test_alex_without_weights_says_where_to_put_them(hub_dir):
    with pytest.raises(FileNotFoundError, match=ALEXNET_FILE):
        M.LPIPS("alex", device="cpu")
    with pytest.raises(ValueError, match="'auto', 'alex' or 'effnet'"):
        M.LPIPS("vgg", device="cpu")


def test_diversity_needs_two_samples(effnet):
    with pytest.raises(ValueError, match="at least 2"):
        M.diversity(_images(1), effnet)


def test_mean_diversity_averages_masks(effnet):
    a, b = _images(3, seed=4), _images(3, seed=5) * 0.1
    mean, per_mask = M.mean_diversity([a, b], effnet)
    assert per_mask.shape == (2,)
    assert per_mask[0] == pytest.approx(M.diversity(a, effnet))
    assert mean == pytest.approx(per_mask.mean())


def test_top1_gt_similarity_picks_the_l1_closest_sample(effnet):
    gt = _images(1, seed=6)[0]
    noise = _images(3, seed=7)
    samples = torch.stack([gt + 0.8 * noise[0], gt + 0.05 * noise[1], -gt]).clamp(-1, 1)
    got = M.top1_gt_similarity(samples, gt, effnet)
    assert got == pytest.approx(effnet.distance(samples[1:2], gt[None]).item(), abs=1e-6)
    assert got < effnet.distance(samples[0:1], gt[None]).item()


def test_gt_similarity_is_per_image(effnet):
    gt = _images(3, seed=8)
    d = M.gt_similarity(torch.cat([gt[:1], gt[2:], gt[1:2]]), gt, effnet)
    assert d.shape == (3,)
    assert d[0].item() == pytest.approx(0.0, abs=1e-6) and d[1].item() > 0.1


# ---- per-class diversity -------------------------------------------------------------------------

def _per_class_reference(samples, label_map, num_classes, metric):
    """Slow reference: loop over classes, pairs and layers."""
    feats = metric.features(samples)
    weights = metric.channel_weights([f.shape[1] for f in feats])
    k = samples.shape[0]
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        region = (label_map == c).double()[None, None]               # (1, 1, H, W)
        if region.sum() == 0:
            continue
        values = []
        for i in range(k):
            for j in range(i + 1, k):
                total = 0.0
                for f, w in zip(feats, weights):
                    diff = ((f[i] - f[j]).double().pow(2) * w.double().view(-1, 1, 1)).sum(0)   # (h, w)
                    m = F.adaptive_avg_pool2d(region, f.shape[2:])[0, 0]
                    total += float((m * diff).sum() / m.sum())
                values.append(total)
        out[c] = float(np.mean(values))
    return out


@pytest.mark.parametrize("which", ["effnet", "lpips_rand"])
def test_per_class_diversity_equals_loop_reference(which, effnet, lpips_rand):
    metric = effnet if which == "effnet" else M.LPIPS(lpips_rand, device="cpu")
    size = 64
    samples = _images(4, size=size, seed=9)
    label_map = torch.zeros(size, size, dtype=torch.long)
    label_map[:, size // 2:] = 1
    label_map[5:20, 3:13] = 3                                        # class 2 and 4 absent
    got = M.per_class_diversity(samples, label_map, 5, metric)
    expected = _per_class_reference(samples, label_map, 5, metric)
    assert got.shape == (5,)
    assert torch.isnan(got[[2, 4]]).all() and torch.isfinite(got[[0, 1, 3]]).all()
    torch.testing.assert_close(got.cpu(), expected, atol=1e-6, rtol=1e-6, equal_nan=True)


def test_per_class_diversity_rejects_bad_labels(effnet):
    with pytest.raises(ValueError, match="raise num_classes"):
        M.per_class_diversity(_images(2), torch.full((32, 32), 7), 5, effnet)


# ---- histograms ----------------------------------------------------------------------------------

def test_score_histograms_share_edges_and_count_every_score(tmp_path):
    rng = np.random.default_rng(0)
    scores = {"ours": rng.normal(0.5, 0.1, 50), "spade": rng.normal(0.2, 0.05, 30)}
    edges, counts = M.score_histograms(scores, bins=10)
    assert edges.shape == (11,)
    assert edges[0] == pytest.approx(min(s.min() for s in scores.values()))
    assert counts["ours"].sum() == 50 and counts["spade"].sum() == 30
    path = M.plot_score_histograms(scores, tmp_path / "hist.png", xlabel="lpips_effnet")
    assert path.read_bytes()[:4] == b"\x89PNG"


# ---- Frechet distance ----------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))          # correlated Gaussian features
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    shifted = [M.frechet_distance(mu, sigma, mu + s, sigma) for s in (0.5, 1.0, 2.0)]
    assert shifted == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)   # |shift|^2, D = 8


def test_frechet_distance_closed_form_for_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    got = M.frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
    assert got == pytest.approx(3 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_route():
    import scipy.linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real                        # pytorch-fid's formula
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_finite_for_singular_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))       # rank-2 covariances in 50 dims
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # sqrt of the ~0 eigenvalues amplifies round-off: zero up to 1e-6 of the trace.
    assert abs(M.frechet_distance(a.mean(0), s1, a.mean(0), s1)) < 1e-6 * np.trace(s1)
    assert M.frechet_distance(a.mean(0), s1, b.mean(0), s2) > 0


class Pixels(nn.Module):
    name = "fd_pixels"

    def forward(self, x):
        return F.avg_pool2d(x, 4).flatten(1)                         # (B, 3 * 2 * 2)


def test_frechet_accumulator_matches_numpy_statistics():
    x = _images(40, size=8, seed=10)
    fd = M.FrechetDistance(Pixels(), batch_size=7).update(x[:25]).update(x[25:])
    mu, sigma = fd.statistics()
    feats = Pixels()(x).double().numpy()
    np.testing.assert_allclose(mu, feats.mean(0), atol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), atol=1e-10)
    assert fd.name == "fd_pixels"
    assert abs(fd.compute(fd)) < 1e-6
    brighter = M.FrechetDistance(fd.extractor).update((x + 0.5).clamp(-1, 1))
    assert fd.compute(brighter) > 0.1
    with pytest.raises(ValueError, match="at least 2 images"):
        M.FrechetDistance(Pixels()).compute(fd)


def test_frechet_falls_back_to_fd_effnet(hub_dir):
    fd = M.FrechetDistance("auto", device="cpu").update(_images(3))
    assert fd.name == "fd_effnet"
    assert fd.sum.shape == (1280,)
    other = M.FrechetDistance(fd.extractor).update(_images(3, seed=1))
    assert np.isfinite(fd.compute(other))


def test_frechet_uses_fid_inception_from_hub_cache(hub_dir):
    from pytorch_fid import inception as I

    net = I._inception_v3(num_classes=1008, aux_logits=False, weights=None)   # random FID Inception
    net.Mixed_5b, net.Mixed_5c = I.FIDInceptionA(192, pool_features=32), I.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b, net.Mixed_6c = I.FIDInceptionC(768, channels_7x7=128), I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d, net.Mixed_6e = I.FIDInceptionC(768, channels_7x7=160), I.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = I.FIDInceptionE_1(1280), I.FIDInceptionE_2(2048)
    torch.save(net.state_dict(), hub_dir / "checkpoints" / M.FID_INCEPTION_FILE)
    fd = M.FrechetDistance("auto", device="cpu").update(_images(2))
    assert fd.name == "fid"
    assert fd.sum.shape == (2048,)


def test_frechet_inception_without_weights_names_the_file(hub_dir):
    with pytest.raises(FileNotFoundError, match=M.FID_INCEPTION_FILE):
        M.FrechetDistance("inception")


# ---- cached features (issue 26: each image through the backbone once) ---------------------------

class CountingTrunk(nn.Module):
    """Two fixed random conv stages that count the images they see."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.a, self.b = nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.Conv2d(5, 7, 3, stride=2, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        h = torch.relu(self.a(x))
        return [h, torch.relu(self.b(h))]


def test_scores_from_given_features_equal_the_scores_that_compute_them():
    metric = M.LPIPS(CountingTrunk(), device="cpu")
    samples, label = _images(5, seed=4), torch.randint(0, 4, (32, 32), generator=torch.Generator().manual_seed(1))
    feats = metric.features(samples, 8)
    assert M.diversity(samples, metric, features=feats) == M.diversity(samples, metric)
    assert torch.equal(M.per_class_diversity(samples, label, 4, metric, features=feats),
                       M.per_class_diversity(samples, label, 4, metric))
    with pytest.raises(ValueError, match="one .* map per layer for the K = 5 samples"):
        M.diversity(samples, metric, features=[f[:3] for f in feats])


def test_cached_features_pass_each_real_batch_through_the_backbone_once():
    trunk = CountingTrunk()
    metric = M.LPIPS(trunk, device="cpu")
    real, other = _images(4, seed=5), _images(4, seed=6)
    first = metric.cached_features(real)
    assert trunk.seen == 4
    again = metric.cached_features(real.clone())                    # same content, another tensor: no pass
    assert trunk.seen == 4 and all(a is b for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(first, metric.features(real)))
    metric.cached_features(other)                                   # other content: its own pass
    changed = real.clone()
    changed[0, 0, 0, 0] += 1e-3
    metric.cached_features(changed)
    assert trunk.seen == 4 + 4 + 4 + 4                              # (the features() call above: 4)
    # Top-1 GT-similarity reads the ground truth's features from the cache: same number as distance()
    samples = _images(3, seed=7)
    best = (samples - real[0]).abs().flatten(1).mean(1).argmin()
    want = float(metric.distance(samples[best][None], real[0][None])[0])
    seen = trunk.seen
    assert M.top1_gt_similarity(samples, real[0], metric) == want
    assert M.top1_gt_similarity(samples, real[0], metric) == want
    assert trunk.seen - seen == 2 + 1         # 1st call: the sample and the ground truth; 2nd: the sample only
