"""Helper for tests/test_train.py::test_ddp_averages_first_step_gradients_like_one_process (not a test).

    python tests/ddp_grads.py OUT RUN_DIR [--mutate-kl]                                    # one process
    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_grads.py OUT RUN_DIR      # DDP (gloo)

Trains one step (global batch 4) and saves every parameter's gradient as it stands after that step,
before the next zero_grad: for G and E the gradient of the generator step, for D that of the
discriminator step, both already averaged over the ranks by DDP. `--mutate-kl` scales the KL by the
world size a second time (the bug the test must catch).
"""
import sys

import torch

from smis import objective
from smis import train as T
from smis.config import TINY as TINY_PRESET

TINY = {**TINY_PRESET, "norm_G": "instance"}


def main(out: str, run_dir: str, mutate_kl: bool) -> None:
    torch.set_num_threads(1)
    if mutate_kl:
        world = T.dist_info()[1]
        real = objective.kl_divergence
        objective.kl_divergence = lambda mu, logvar, **kw: real(mu, logvar, **kw) * world
    cfg = T.TrainConfig(run_dir=run_dir, preset_overrides=TINY, data_length=16, steps=1, batch_size=4,
                        perceptual="none", tensorboard=False, progress=False, ckpt_every=1, log_every=1, image_every=0)
    grads = {}

    def grab(trainer, step, losses):
        for net in ("G", "E", "D"):
            for name, p in getattr(trainer.nets, net).named_parameters():
                grads[f"{net}.{name}"] = p.grad.detach().clone()

    T.Trainer(cfg).fit(callback=grab)
    if T.dist_info()[0] == 0:
        torch.save(grads, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--mutate-kl" in sys.argv[3:])
