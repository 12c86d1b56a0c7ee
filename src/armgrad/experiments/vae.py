"""Discrete VAEs trained with any estimator of the registry (the DisARM protocol by default).

Reads top to bottom: configuration, data, model, estimators, optimisers, the training step,
evaluation, logging and checkpoints. The estimators know nothing of VAEs and the model nothing of
estimators; :func:`armgrad.network.chain_estimate` wires the encoder's layers to the estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from ..data import load_dataset
from ..diagnostics import controls_frozen
from .. import multisample
from ..models.vae import BinaryVAE, bernoulli_log_prob
from ..network import chain_estimate
from .reporting import progress
from .training import ConfigurationError, Task, TrainingConfig, adam, finish, make_estimators, run_training


@dataclass
class VAEConfig(TrainingConfig):
    dataset: str = "fashion-mnist"
    steps: int = 1_000_000
    out: str = "runs/vae"
    prior_lr: float = 1e-2  # SGD, prior logits
    grad_var_draws: int = 20  # encoder-gradient estimates drawn for its variance, at each evaluation
    objective: str = "elbo"  # or "iwae": the num_samples-sample importance-weighted bound (one stochastic layer)
    protocol: str = "disarm"  # which paper's setting the batch, learning rates and prior follow (PROTOCOLS)


# Each paper's training setting: what --protocol sets unless a flag says otherwise. The DisARM protocol
# (Dong et al. 2020) learns the prior; the Double-CV and RODEO papers (Titsias & Shi 2022, Shi et al.
# 2022) keep it fixed at p = 1/2 (an SGD learning rate of 0) and use Adam 1e-3, 3e-4 on Fashion-MNIST.
PROTOCOLS = {
    "disarm": {"batch_size": 50, "lr": 1e-4, "prior_lr": 1e-2},
    "rodeo": {"batch_size": 100, "lr": 1e-3, "prior_lr": 0.0},
}


def protocol_values(protocol: str, dataset: str) -> dict:
    """The batch size and learning rates of ``protocol`` on ``dataset``."""
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    values = dict(PROTOCOLS[protocol])
    if protocol == "rodeo" and dataset.startswith("fashion-mnist"):
        values["lr"] = 3e-4
    return values


@torch.no_grad()
def importance_weighted_bound(model: BinaryVAE, x: torch.Tensor, num_samples: int, generator=None,
                              example_chunk: int = 100, sample_chunk: int = 100, desc: str | None = None) -> torch.Tensor:
    """``log (1/K) sum_k p(x, b_k) / q(b_k | x)`` per example, ``(N,)``, in chunks (flat memory).

    With ``K = 1`` it is the ELBO of one sample. Memory is bounded by
    ``example_chunk * sample_chunk * 784`` floats whatever ``N`` and ``K``. With ``desc``, shows
    its progress (it can take as long as thousands of training steps).
    """
    bounds = []
    bar = progress(total=x.shape[0], desc=desc, unit="image", disable=desc is None)
    for start in range(0, x.shape[0], example_chunk):
        xb = x[start : start + example_chunk]
        parts = []
        for k0 in range(0, num_samples, sample_chunk):
            k = min(sample_chunk, num_samples - k0)
            samples, log_q = model.sample_posterior(xb, k, generator)
            parts.append(torch.logsumexp(model.log_joint(xb, samples) - log_q, dim=0))
        bounds.append(torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_samples))
        bar.update(xb.shape[0])
    bar.close()
    return torch.cat(bounds)


def negative_bound(model, x, estimators, num_samples, generator) -> torch.Tensor:
    """The estimated negative ELBO per example ``(*batch)``, or with a multi-sample estimator the
    negative ``num_samples``-sample bound; its gradient is the estimator's."""
    if isinstance(estimators[0], multisample.MultiSampleEstimator):
        return -multisample_bound(model, x, estimators[0], num_samples, generator)
    return chain_estimate(partial(model.negative_elbo, x), model.encoder_layers(), x, estimators,
                          num_samples, generator=generator)


def training_loss(model, x, estimators, num_samples, generator) -> torch.Tensor:
    """The mean of :func:`negative_bound` over the batch: the loss of one training step."""
    return negative_bound(model, x, estimators, num_samples, generator).mean()


def multisample_bound(model, x, estimator, num_samples, generator) -> torch.Tensor:
    """The estimate of ``L_K`` per example: ``log_weight = log p(x, b) - log q(b | x)`` with the live logits."""
    (layer,) = model.encoder_layers()
    logits = layer(x)

    def log_weight(b):  # (S, batch, D) -> (S, batch)
        return model.log_joint(x, [b]) - bernoulli_log_prob(logits.expand_as(b), b)

    return multisample.estimate(log_weight, logits, estimator, num_samples, generator=generator)


def make_vae_estimators(config, model, device) -> list:
    """The estimator of each stochastic layer; one multi-sample estimator for the IWAE objective."""
    if config.objective == "iwae":
        if model.num_layers != 1:
            raise ConfigurationError(f"--objective iwae trains models with one stochastic layer, not "
                                     f"{config.model!r} ({model.num_layers} layers)")
        return [multisample.get_estimator(config.estimator)]
    return make_estimators(config.estimator, model.num_layers, model.prior_logits.numel(), device)


def encoder_gradient_variance(model, x, estimators, num_samples, draws: int, generator) -> float:
    """Mean over encoder parameters of the variance of their gradient, over ``draws`` estimates on ``x``."""
    params = [p for p in model.encoder.parameters()]
    grads = []
    with controls_frozen(estimators):
        for _ in range(draws):
            loss = training_loss(model, x, estimators, num_samples, generator)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return float(torch.stack(grads).var(0).mean())


def evaluate(model, data, estimators, config: VAEConfig, step: int, final: bool) -> dict:
    """Test ELBO (one sample), the K-sample bound at the end, and the encoder-gradient variance."""
    gen = torch.Generator(config.device).manual_seed(10_000 * config.seed + step)  # apart from training
    device = config.device
    test = data.split("test").to(device)
    row = {"test_elbo": float(importance_weighted_bound(model, test, 1, gen).mean()), "test_bound": None}
    if config.objective == "iwae":  # the training objective's own bound, on the test set
        row["test_bound_k"] = float(importance_weighted_bound(model, test, config.num_samples, gen).mean())
    if final:  # None until then: not computed (an empty cell in metrics.csv)
        row["test_bound"] = float(importance_weighted_bound(model, test, config.test_samples, gen,
                                                            desc=f"test bound (K={config.test_samples})").mean())
    fixed = data.split("train")[: config.batch_size].to(device)
    row["grad_var"] = encoder_gradient_variance(model, fixed, estimators, config.num_samples,
                                                config.grad_var_draws, gen)
    return row


def train(config: VAEConfig, resume: bool = False) -> dict:
    """Train, evaluate and checkpoint one VAE; return (and write) its results."""
    device = config.device
    data = load_dataset(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)  # initial weights
    model = BinaryVAE(config.model, data.train_mean, slope=config.slope).to(device)
    estimators = make_vae_estimators(config, model, device)
    optimizers = {
        "model": adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), config.lr),
        "prior": torch.optim.SGD([model.prior_logits], lr=config.prior_lr),
    }
    task = Task(
        model=model, estimators=estimators, optimizers=optimizers,
        loss=lambda x, gen: training_loss(model, x, estimators, config.num_samples, gen),
        batch=data.train_batch,
        num_train=data.train.shape[0],
        evaluate=lambda step, final: evaluate(model, data, estimators, config, step, final),
        train_metric="train_elbo" if config.objective == "elbo" else "train_bound",
    )
    run, results = run_training(config, task, resume)
    return finish_vae(run, results, config)


def finish_vae(run, results: dict, config: VAEConfig) -> dict:
    """Add the VAE's numbers to the loop's results; write results.json and the curves (:func:`finish`)."""
    last = run.rows[-1]
    results.update(test_elbo=last["test_elbo"], test_bound=last["test_bound"], test_samples=config.test_samples,
                   grad_var=last["grad_var"], objective=config.objective, protocol=config.protocol)
    if config.objective == "iwae":
        results["test_bound_k"] = last["test_bound_k"]
    curves = (("train_elbo", "train ELBO (1 sample)") if config.objective == "elbo" else
              ("train_bound", f"train bound (K={config.num_samples})"), ("test_elbo", "test ELBO (1 sample)"))
    return finish(run, results, curves, f"{config.dataset} {config.model} {config.estimator}")
