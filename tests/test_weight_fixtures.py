"""smis.weight_fixtures: the generated weights have the published files' keys, shapes and order
(tests/data/official_checkpoint_keys.json) and load through smis.official.load_official."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from smis.official import load_official
from smis.utils import safe_load
from smis.weight_fixtures import write_official_weights

REFERENCE = Path(__file__).parent / "data" / "official_checkpoint_keys.json"   # committed copy


@pytest.fixture
def weights_dir(tmp_path):
    """tmp_path for checkpoint files of hundreds of MB, deleted after the test (pytest keeps recent tmp folders)."""
    yield tmp_path
    for path in tmp_path.rglob("*.pth"):
        path.unlink()


@pytest.mark.parametrize("dataset", ["gta5", "ade20k", pytest.param("deepfashion", marks=pytest.mark.slow)])
def test_official_weights_are_the_published_files_and_load(dataset, official_weights):
    ref = json.loads(REFERENCE.read_text())[dataset]
    paths = official_weights(dataset)
    assert [p.name for p in paths] == ["latest_net_G.pth", "latest_net_E.pth"]
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["latest_net_E.pth", "latest_net_G.pth"]
    states = []
    for path, net in zip(paths, ("netG", "netE")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert type(state) is OrderedDict                                # a plain state dict, no wrapper
        assert list(state) == list(ref[net])                             # the published names, in their order
        assert {k: list(v.shape) for k, v in state.items()} == ref[net]
        assert all(v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
                   for k, v in state.items())
        states.append(state)
    sg, se = states
    assert sg["fc.weight"].std() > 0 and se["fc_mu1.weight"].std() > 0   # random, not zeros
    G, E = load_official(*paths, dataset=dataset)
    for module, state in ((G, sg), (E, se)):
        ours = module.state_dict()
        assert all(torch.equal(ours[k], state[k]) for k in state)
    assert G.image_size == tuple(round(ref["options"]["crop_size"] / r) for r in (ref["options"]["aspect_ratio"], 1))


def test_official_weights_seed_rng_and_datasets(official_weights, weights_dir):
    published = safe_load(official_weights("gta5")[1])                  # encoder, seed 0
    rng = torch.get_rng_state()
    again = safe_load(write_official_weights(weights_dir / "a", "gta5", seed=0)[1])
    other = safe_load(write_official_weights(weights_dir / "b", "gta5", seed=1)[1])
    assert torch.equal(torch.get_rng_state(), rng)                      # the caller's random stream is untouched
    assert all(torch.equal(again[k], published[k]) for k in published)  # same seed, same weights
    assert not torch.equal(other["fc_mu1.weight"], published["fc_mu1.weight"])
    with pytest.raises(ValueError, match=r"'cityscapes' has no published checkpoint.*Fix: use one of"):
        write_official_weights(weights_dir / "c", "cityscapes")
    assert not (weights_dir / "c").exists()
