"""smis.options: TrainConfig declared once (the CLI generated from its fields and their metadata), bad values
refused at parse time and through the API, resume refusing changed options."""
import argparse
import dataclasses
import subprocess

import pytest

from conftest import TINY, cfg, cli, cli_env, trained
from smis import train as T
from smis.options import add_config_arguments
from smis.utils import project_root


def test_cli_is_generated_from_every_config_field_with_the_old_spellings():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    dests = {a.dest for a in p._actions if a.dest != "help"}
    assert dests == {f.name for f in dataclasses.fields(T.TrainConfig)}                    # no option forgotten
    assert all(a.help for a in p._actions)                                                    # help from metadata
    assert T.parse_args([])[0] == T.TrainConfig()                                             # same defaults
    flags = ["--no-flip", "--no-lr-decay", "--no-fused-adam", "--channels-last", "--paper-text-lr", "--compile",
             "--no-cudnn-benchmark", "--no-tensorboard", "--no-progress"]
    cfg, resume = T.parse_args(flags + ["--resume", "--kl-weight", "0.5", "--steps", "7", "--data-root", "x",
                                        "--precision", "bf16", "--set", "ngf=32", "image_size=[128,128]"])
    assert resume and (cfg.flip, cfg.lr_decay, cfg.fused_adam, cfg.channels_last, cfg.paper_text_lr, cfg.compile,
                       cfg.cudnn_benchmark, cfg.tensorboard, cfg.progress) == (False, False, False, True, True, True,
                                                                                False, False, False)
    assert (cfg.kl_weight, cfg.steps, cfg.data_root, cfg.precision) == (0.5, 7, "x", "bf16")
    assert cfg.preset_overrides == {"ngf": 32, "image_size": [128, 128]}
    assert T.parse_args(["--fused-adam", "--flip"])[0].fused_adam is True                     # both directions


def test_cli_choices_come_from_the_field_metadata(capsys):
    with pytest.raises(SystemExit):
        T.parse_args(["--precision", "fp8"])
    assert "fp8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="perceptual='vgg'"):
        T.TrainConfig(perceptual="vgg")                                                       # the API checks too


@pytest.mark.parametrize("argv, flag", [
    (["--keep-last", "0"], "keep-last"), (["--keep-last", "-1"], "keep-last"), (["--steps", "0"], "steps"),
    (["--steps", "-1"], "steps"), (["--batch-size", "0"], "batch-size"), (["--ckpt-every", "0"], "ckpt-every"),
    (["--log-every", "0"], "log-every"), (["--data-length", "0"], "data-length"), (["--set", "ngf"], "FIELD=JSON"),
    (["--set", "ngff=3"], "ngff"), (["--variant", "clvea"], "variant"), (["--threads", "0"], "threads"),
    (["--decay-start", "1.5"], "decay-start"), (["--image-every", "-1"], "image-every"),
])
def test_cli_rejects_bad_values_at_parse_time(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        T.parse_args(argv)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err


def test_config_rejects_keep_last_zero_through_the_api_too(tmp_path):
    with pytest.raises(ValueError, match="keep_last=0"):
        cfg(tmp_path, keep_last=0)


def test_resume_with_changed_options_is_refused(tmp_path):
    trained(tmp_path, steps=2)
    before = (tmp_path / "run" / "config.json").read_text()
    for change, name in ((dict(seed=1), "seed"), (dict(batch_size=4), "batch_size"),
                         (dict(variant="gaugan_vae"), "variant"),
                         (dict(preset_overrides={**TINY, "ngf": 16}), "preset_overrides"),
                         (dict(kl_weight=1.0), "kl_weight")):
        with pytest.raises(T.ResumeMismatch, match=rf"{name}: checkpoint .*, now "):
            T.Trainer(cfg(tmp_path, steps=4, **change)).fit(resume=True)
    assert (tmp_path / "run" / "config.json").read_text() == before      # not rewritten
    r = subprocess.run(cli(tmp_path, tmp_path / "run", 4, ["--resume", "--seed", "5"]), env=cli_env(),
                       cwd=project_root(), capture_output=True, text=True)
    assert r.returncode == 2 and "seed: checkpoint 0, now 5" in r.stderr
