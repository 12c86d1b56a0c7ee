"""The per-step training path never reads a value back from the device (no host-device sync on CUDA).

On this machine there is no GPU, so the CPU test runs the step under a function mode that records
every host read of a tensor (``.item()``, ``bool(t)``, ``.tolist()``, data-dependent shapes ...),
with the checks switched to their on-device form. On CUDA the same step runs under PyTorch's own
sync detector.
"""

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode

from armgrad import _checks
from armgrad.experiments.training import backward_step, make_estimators
from armgrad.experiments.vae import training_loss
from armgrad.models.vae import DiscreteVAE

HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.masked_select,
    torch.Tensor.masked_select,
    torch.unique,
    torch.Tensor.unique,
    torch.Tensor.cpu,
}


class HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def one_step(model_name, estimator, device="cpu", steps=2, watch=None):
    torch.manual_seed(0)
    vae = DiscreteVAE(model_name, torch.rand(784) * 0.8 + 0.1).to(device)
    estimators = make_estimators(estimator, vae.num_layers, 200, device)
    params = list(vae.parameters()) + [p for e in estimators if isinstance(e, torch.nn.Module) for p in e.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    gens = [torch.Generator(device).manual_seed(1)]
    x = (torch.rand(50, 784) < 0.5).float()
    losses = []
    for _ in range(steps):
        batch = x.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with (
            watch or contextlib.nullcontext()
        ):  # the forward and backward passes (Adam's step counter is a host scalar even on CUDA)
            losses.append(
                backward_step(
                    lambda xs, g: training_loss(
                        vae, xs, g, estimators=estimators, num_samples=3 if estimator == "relax" else 2
                    ),
                    batch,
                    gens,
                    [0],
                    estimators,
                )
            )
        optimizer.step()
    return losses


FUSED = [("linear", "disarm"), ("linear", "arm"), ("linear2", "arm"), ("nonlinear", "reinforce_loo")]


@pytest.mark.parametrize(
    "model_name,estimator,checks",
    [(*case, checks) for case in FUSED for checks in ("on-device", "cpu")] + [("linear", "relax", "on-device")],
)
def test_training_step_reads_nothing_back(monkeypatch, model_name, estimator, checks):
    """The fused estimators' step reads nothing back even in the CPU form of the checks: it leaves the finiteness
    checks to the divergence guard (``validate=False``); RELAX, estimated layer by layer, checks its f on the device."""
    one_step(model_name, estimator, steps=1)  # warm-up: lazy initialisation is not the step
    monkeypatch.setattr(_checks, "asynchronous", lambda device: checks == "on-device")
    mode = HostReads()
    one_step(model_name, estimator, watch=mode)
    assert mode.seen == [], f"host reads in the training step: {mode.seen}"


def batched_step(device="cpu", watch=None):
    """One step of three runs side by side (armgrad study): stacked model, per-run generators, a
    different estimator per run."""
    from armgrad._random import RunGenerators
    from armgrad.estimators import get_estimator
    from armgrad.experiments.mixture import RunMixture
    from armgrad.experiments.vae import training_loss
    from armgrad.models.stacked import stack

    models, mean = [], torch.rand(784) * 0.8 + 0.1
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(DiscreteVAE("linear2", mean))
    model = stack(models).to(device)
    estimators = RunMixture.for_runs([get_estimator(e) for e in ("disarm", "arm", "reinforce_loo")], 2)
    noise = RunGenerators([torch.Generator(device).manual_seed(s) for s in range(3)])
    x = (torch.rand(3, 50, 784) < 0.5).float().to(device, non_blocking=True)
    for _ in range(2):
        with watch or contextlib.nullcontext():
            training_loss(model, x, noise, estimators=estimators, num_samples=2).sum().backward()


def test_study_training_step_reads_nothing_back(monkeypatch):
    batched_step()
    monkeypatch.setattr(_checks, "asynchronous", lambda device: True)
    mode = HostReads()
    batched_step(watch=mode)
    assert mode.seen == [], f"host reads in the batched step: {mode.seen}"


def test_the_detector_sees_host_reads(monkeypatch):
    """The public chain checks its logits and f by default, and the CPU form of the checks reads back."""
    from armgrad.network import chain_estimate

    monkeypatch.setattr(_checks, "asynchronous", lambda device: False)
    vae = DiscreteVAE("linear", torch.rand(784) * 0.8 + 0.1)
    x = (torch.rand(50, 784) < 0.5).float()
    mode = HostReads()
    with mode:
        chain_estimate(lambda b, phi: vae.negative_elbo(x, b, phi), vae.encoder_layers(), x, "disarm", 2)
    assert mode.seen
    with HostReads() as quiet:  # and nothing without the checks
        chain_estimate(
            lambda b, phi: vae.negative_elbo(x, b, phi), vae.encoder_layers(), x, "disarm", 2, validate=False
        )
    assert quiet.seen == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_step_never_synchronises():
    batched_step("cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        batched_step("cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("estimator", ["disarm", "arm", "reinforce_loo"])
def test_cuda_training_step_never_synchronises(estimator):
    one_step("linear2", estimator, "cuda", steps=1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        one_step("linear2", estimator, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
