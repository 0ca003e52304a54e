"""Shared checks for the priors' training tests."""

import pytest
import torch
from safetensors.torch import load_file


def check_resume_after_interrupt(train, cfg, fresh, folder, interrupt_call, parts, monkeypatch):
    """Interrupt ``train(cfg, folder)`` at the ``interrupt_call``-th ``mse_loss`` call (a kill between
    checkpoints), check that a fresh start over it is refused, resume it, and check that the weights
    of ``parts`` equal those of the uninterrupted run in ``fresh``."""
    real_mse = torch.nn.functional.mse_loss
    calls = {"n": 0}

    def interrupting_mse(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == interrupt_call:
            raise KeyboardInterrupt
        return real_mse(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", interrupting_mse)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, folder, progress=False)
    monkeypatch.setattr(torch.nn.functional, "mse_loss", real_mse)
    assert not (folder / "model_index.json").exists()
    with pytest.raises(Exception, match="--resume"):
        train(cfg, folder, progress=False)
    train(cfg, folder, resume=True, progress=False)
    for part in parts:
        (file,) = [f.name for f in (fresh / part).glob("*.safetensors")]
        wa, wb = load_file(fresh / part / file), load_file(folder / part / file)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part
