"""smis.sampling, the one sampling path, on tiny seeded models: prior codes and samples (per-mask seeds or one
generator, reproducible, independent of the chunking), encoder means and reconstructions, and the errors of a
model that cannot do them."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny
from smis import evaluate as ev
from smis.capabilities import UnsupportedEdit
from smis.networks import Latents
from smis.sampling import chunks, encode_means, generate, prior_latents, reconstruct, sample_prior


# Float-noise floor of the TINY nets on a CPU. The same inputs through G (or E then G) at another batch
# size pick other oneDNN/MKL kernels, so images agree only up to the last bits. Measured on an AMD EPYC
# (`lscpu`: "AMD EPYC", AVX512; torch 2.14.1) with 1 and 2 intra-op threads: max |diff| 1.6e-6 for G at
# batch 1 vs 4/8/64 (5.4e-7 for the chunk 4 vs 64 of the test below), 1.9e-6 for E then G at chunk 1/2
# vs 3; 0 between 1 and 2 threads at the same batch. Distinct prior samples of one mask differ by >= 0.30.
# So images computed at different batch sizes are compared with atol BATCH_NOISE (~10x the floor,
# ~15000x below the gap between samples); codes and same-batch results stay bitwise.
BATCH_NOISE = 2e-5


def test_k_prior_samples_differ_and_are_reproducible_per_mask(clvae, data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:3])
    seeds = [ev.mask_seed(0, i) for i in idx[:3]]
    s = sample_prior(clvae, label, 5, seeds, chunk=4)
    assert s.shape == (3, 5, 3, 64, 64)
    flat = s.flatten(2)
    gaps = (flat[:, :, None] - flat[:, None]).abs().amax(-1)            # (B, K, K)
    off = ~torch.eye(5, dtype=torch.bool)
    assert (gaps[:, off] > 1000 * BATCH_NOISE).all(), "two of the K samples of a mask are (nearly) identical"
    # the codes G sees are drawn per mask before chunking: bitwise the same whatever the chunk or batch
    fed = []
    hook = clvae.G.register_forward_hook(lambda module, args, out: fed.append(args[1]))

    def codes_fed(lab, sd, chunk):
        fed.clear()
        sample_prior(clvae, lab, 5, sd, chunk=chunk)
        return list(fed)

    try:
        by4, by64, one = codes_fed(label, seeds, 4), codes_fed(label, seeds, 64), codes_fed(label[1:2], seeds[1:2], 64)
    finally:
        hook.remove()
    assert len(by4) == 4 and len(by64) == 1                             # 15 codes in chunks of 4, or at once
    drawn = prior_latents(clvae, label, 5, seeds)
    for got, want in ((Latents.cat(by4), drawn), (by64[0], drawn), (one[0], drawn[5:10])):   # one: mask 1 alone
        assert torch.equal(got.z, want.z) and torch.equal(got.zc, want.zc) and torch.equal(got.present, want.present)
    # so the images differ by the batch-size float noise only (not bitwise: see BATCH_NOISE)
    torch.testing.assert_close(sample_prior(clvae, label, 5, seeds, chunk=64), s, atol=BATCH_NOISE, rtol=0)
    alone = sample_prior(clvae, label[1:2], 5, seeds[1:2])
    torch.testing.assert_close(alone[0], s[1], atol=BATCH_NOISE, rtol=0)
    assert not torch.allclose(sample_prior(clvae, label[:1], 5, [seeds[0] + 1])[0], s[0])


def test_gaugan_gives_one_image_per_mask(data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:2])
    s = sample_prior(tiny("gaugan"), label, 7, [0, 1])
    assert s.shape == (2, 1, 3, 64, 64)


def test_reconstruction_decodes_the_encoder_means(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:3])
    rec = reconstruct(clvae, image, label, chunk=2)
    with torch.no_grad():
        mu, logvar = clvae.E(image, label)
        torch.testing.assert_close(rec, clvae.G(label, mu), atol=BATCH_NOISE, rtol=0)   # chunk 2 vs batch 3
        sampled = clvae.G(label, Latents.reparameterize(mu, logvar, torch.Generator().manual_seed(0)))
    assert not torch.allclose(rec, sampled, atol=1e-3)
    with pytest.raises(ValueError, match="no encoder"):
        reconstruct(tiny("gaugan"), image, label)


def test_one_generator_draws_the_batch_reproducibly_and_images_lie_in_range(clvae, data):
    ds, idx = data
    _, label = ev.load_pairs(ds, idx[:2])
    a, za = sample_prior(clvae, label, 3, torch.Generator().manual_seed(7), return_latents=True)
    b, zb = sample_prior(clvae, label, 3, torch.Generator().manual_seed(7), return_latents=True)
    assert a.shape == (2, 3, 3, 64, 64) and torch.equal(a, b) and torch.equal(za.zc, zb.zc)
    assert -1 <= a.min() and a.max() <= 1 and a.std() > 0.01             # tanh output, not a constant
    want = Latents.prior(clvae.spec, label.repeat_interleave(3, 0), generator=torch.Generator().manual_seed(7))
    assert torch.equal(za.z, want.z) and torch.equal(za.zc, want.zc)       # one draw of the (B K) codes
    assert za.z.shape == (6, clvae.spec.z_dim)
    assert za.zc.shape == (6, len(clvae.spec.layers), clvae.spec.code_classes, clvae.spec.z_dim_local)
    assert not torch.equal(sample_prior(clvae, label, 3, torch.Generator().manual_seed(8)), a)
    assert torch.equal(generate(clvae, label.repeat_interleave(3, 0), za, chunk=64).view_as(a), a)   # G on the codes


def test_encoder_means_are_deterministic_and_chunked_alike(clvae, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx)
    mu = encode_means(clvae, image, label)
    again = encode_means(clvae, image, label, chunk=4)
    assert torch.equal(mu.z, again.z) and torch.equal(mu.zc, again.zc)     # no sampling: the same means
    with torch.no_grad():
        want, _ = clvae.E(image, label)
    torch.testing.assert_close(encode_means(clvae, image, label, chunk=1).z, want.z, atol=BATCH_NOISE, rtol=0)
    assert mu.z.shape == (4, clvae.spec.z_dim) and torch.equal(mu.present, want.present)


@pytest.mark.parametrize("variant", ["gaugan", "cimle"])
def test_a_variant_without_an_encoder_is_rejected_with_the_documented_error(variant, data):
    ds, idx = data
    image, label = ev.load_pairs(ds, idx[:1])
    with pytest.raises(UnsupportedEdit, match=rf"variant '{variant}'.* cannot do reconstruction: it has no encoder"
                                              r".*Fix: load a clvae model"):
        encode_means(tiny(variant), image, label)
    with pytest.raises(UnsupportedEdit, match="cannot do style-guided synthesis"):
        encode_means(tiny(variant), image, label, edit="style-guided synthesis")


def test_bad_arguments_are_refused():
    nets = tiny("gaugan_vae")
    label = torch.zeros(2, 64, 64, dtype=torch.long)
    with pytest.raises(ValueError, match="k=0: ask for at least one sample"):
        sample_prior(nets, label, 0, [0, 1])
    with pytest.raises(ValueError, match="got 1 seeds for 2 masks"):
        prior_latents(nets, label, 2, [0])
    with pytest.raises(ValueError, match="chunk size must be >= 1, got 0"):
        chunks(5, 0)
    assert chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)] and chunks(0, 3) == []
