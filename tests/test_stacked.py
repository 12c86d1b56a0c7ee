"""models/stacked.py: R models of one architecture as one stacked model."""

from __future__ import annotations

import torch

from armgrad.models.stacked import stack
from armgrad.models.vae import DiscreteVAE


def test_stacked_model_computes_each_runs_model():
    mean = torch.rand(784)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(DiscreteVAE("nonlinear", mean))
    model = stack(models)
    x = torch.bernoulli(torch.rand(3, 4, 784))
    b = torch.bernoulli(torch.rand(2, 3, 4, 200))
    joint, logits = model.log_joint(x, [b]), model.encoder_layers()[0](x)
    for r in range(3):
        torch.testing.assert_close(joint[:, r], models[r].log_joint(x[r], [b[:, r]]), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(logits[r], models[r].encoder_layers()[0](x[r]), rtol=1e-5, atol=1e-5)
