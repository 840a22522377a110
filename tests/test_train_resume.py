"""Resuming a run with another length: the schedule as timm's --resume computes it, and sentences a user can act on."""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from resnets.errors import BadInput
from resnets.train import make_config, train
from test_cifar_data import write_fake_cifar


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, per_batch=26, n_test=32)  # 130 training images: 2 steps of 64 per epoch
    return root


def config(cifar, out, epochs: int, **kw):
    return make_config("fast-cifar", model="resnet20", data=str(cifar), out=str(out), epochs=epochs, batch_size=64,
                       lr=0.1, schedule="cosine", warmup_fraction=0.0, precision="fp32", threads=1, progress=False,
                       cache_dir=str(cifar / "cache"), **kw)


def test_a_longer_resumed_run_recomputes_the_schedule_as_timm_does_and_says_so(cifar, tmp_path, monkeypatch, capsys):
    used: list[float] = []
    step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (used.append(self.param_groups[0]["lr"]),
                                                                         step(self, *a, **k))[1])
    train(config(cifar, tmp_path, epochs=2))
    capsys.readouterr()
    train(config(cifar, tmp_path, epochs=3, resume=True))
    said = capsys.readouterr().out
    assert "was a run of 2 epochs, now of 3 epochs: the cosine learning-rate schedule is recomputed" in said

    def timm_lrs(total: int, start: int, updates: int) -> list[float]:
        """timm train.py: a fresh scheduler for the run's length, stepped to where the run resumes."""
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = CosineLRScheduler(opt, t_initial=total, t_in_epochs=False)
        out = []
        for t in range(start, start + updates):
            sched.step_update(t)
            out.append(opt.param_groups[0]["lr"])
        return out

    assert used == pytest.approx(timm_lrs(4, 0, 4) + timm_lrs(6, 4, 2), abs=1e-9)
    assert used[4] > used[3]  # the jump the message announces

    # finished: nothing to train, and what to do instead, in both spellings
    assert train(config(cifar, tmp_path, epochs=3, resume=True))["epoch"] == 3
    said = capsys.readouterr().out
    assert "has finished its 3 epochs; nothing to train" in said and "epochs=N, --epochs N, N above 3" in said
    assert len(used) == 6
    # shorter than what it trained: refused, naming the option
    with pytest.raises(BadInput, match=r"already trained 3 epochs, more than the 2 epochs asked for: .* with epochs= above 3"):
        train(config(cifar, tmp_path, epochs=2, resume=True))


def test_a_run_stopped_by_on_epoch_end_resumes_to_the_uninterrupted_runs_numbers(cifar, tmp_path):
    whole = train(config(cifar, tmp_path / "whole", epochs=3))
    seen: list[int] = []
    stopped = train(config(cifar, tmp_path / "cut", epochs=3), on_epoch_end=lambda row: seen.append(row["epoch"]) or
                    row["epoch"] == 1)
    assert seen == [1] and stopped["epoch"] == 1 and (tmp_path / "cut" / "last.pt").is_file()
    resumed = train(config(cifar, tmp_path / "cut", epochs=3, resume=True))
    keys = ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_error")
    assert [{k: r[k] for k in keys} for r in resumed["history"]] == [{k: r[k] for k in keys} for r in whole["history"]]
