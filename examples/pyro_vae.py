"""A binary VAE in Pyro, trained with SVI and armgrad's DisARM: the linear model of the DisARM protocol.

    python examples/pyro_vae.py --steps 5000                     # armgrad.pyro.ELBO("disarm")
    python examples/pyro_vae.py --steps 5000 --elbo tracegraph   # Pyro's TraceGraph_ELBO, to compare

The model: 200 Bernoulli latent units with learned prior logits, a linear decoder to 784 Bernoulli
pixels; the guide: a linear encoder of ``x - mean training image``. As in the protocol (and in
``armgrad vae --model linear``): Glorot-uniform weights, zero biases, the decoder's output bias at the
logit of the mean image, batch 50 of freshly binarised Fashion-MNIST, Adam 1e-4 for the networks
and SGD 1e-2 for the prior logits, on the per-image mean of the loss. Prints the test ELBO (one
sample per image, nats) every ``--eval-every`` steps and a JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from torch import nn

import armgrad.pyro
from armgrad.data import load_dataset

UNITS, PIXELS = 200, 784


def glorot(n_in, n_out, bias=None):
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias) if bias is None else layer.bias.data.copy_(bias)
    return layer


class BinaryVAE(nn.Module):
    """``baseline`` (for TraceGraph_ELBO): None, "average" (a decaying average) or "learned" (linear in x)."""

    def __init__(self, train_mean, baseline=None):
        super().__init__()
        self.register_buffer("train_mean", train_mean)
        self.encoder = glorot(PIXELS, UNITS)
        self.decoder = glorot(UNITS, PIXELS, bias=torch.logit(train_mean.clamp(0.001, 0.999)))
        self.baseline = baseline
        self.baseline_net = nn.Linear(PIXELS, 1) if baseline == "learned" else None

    def model(self, x):
        pyro.module("decoder", self.decoder)
        prior_logits = pyro.param("prior_logits", torch.zeros(UNITS))
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=1.0 / x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(logits=prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(2 * b - 1)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        infer = {}
        if self.baseline == "average":
            infer = {"baseline": {"use_decaying_avg_baseline": True}}
        elif self.baseline == "learned":
            baseline = pyro.module("baseline", self.baseline_net)
            infer = {"baseline": {"nn_baseline": lambda x: baseline(x).squeeze(-1), "nn_baseline_input": x}}
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=1.0 / x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=self.encoder(x - self.train_mean)).to_event(1), infer=infer)


def protocol_optimizer(params, lr, sgd=False):
    return torch.optim.SGD(params, lr=lr) if sgd else torch.optim.Adam(params, lr=lr)


def make_elbo(name: str, estimator: str, num_samples: int):
    if name == "armgrad":
        return armgrad.pyro.ELBO(estimator, num_samples)
    return {"tracegraph": TraceGraph_ELBO, "trace": Trace_ELBO}[name]()


def test_elbo(vae, test: torch.Tensor, chunk: int = 1000) -> float:
    """The mean one-sample ELBO of the test images (Trace_ELBO's loss is its negative)."""
    with torch.no_grad():
        total = sum(Trace_ELBO().loss(vae.model, vae.guide, x) * x.shape[0] for x in test.split(chunk))
    return -total / test.shape[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--elbo", choices=["armgrad", "tracegraph", "trace"], default="armgrad")
    parser.add_argument("--estimator", default="disarm", help="armgrad's estimator (with --elbo armgrad)")
    parser.add_argument("--num-samples", type=int, default=2, help="evaluations per Bernoulli site (armgrad)")
    parser.add_argument(
        "--baseline",
        choices=["none", "average", "learned"],
        default="none",
        help="TraceGraph_ELBO's baseline (with --elbo tracegraph)",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--save", default=None, help="write the trained parameters to this file")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    data = load_dataset(args.dataset, args.data_dir)
    test = data.split("test")
    vae = BinaryVAE(data.train_mean, None if args.baseline == "none" else args.baseline)
    optimizer = pyro.optim.PyroOptim(
        protocol_optimizer, lambda module, param: {"lr": 1e-2, "sgd": True} if param == "prior_logits" else {"lr": 1e-4}
    )
    elbo = make_elbo(args.elbo, args.estimator, args.num_samples)
    svi = SVI(vae.model, vae.guide, optimizer, loss=elbo)

    seconds, rows = 0.0, []  # training time, evaluations left out
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        x = data.train_batch(torch.randint(data.train.shape[0], (args.batch_size,)))
        train_loss = svi.step(x)
        seconds += time.perf_counter() - start
        if step % args.eval_every == 0 or step == args.steps:
            rows.append(
                {"step": step, "train_elbo": -train_loss, "test_elbo": test_elbo(vae, test), "seconds": seconds}
            )
            print(
                f"step {step}: train ELBO {-train_loss:.2f}, test ELBO {rows[-1]['test_elbo']:.2f} "
                f"({rows[-1]['seconds']:.0f} s)",
                flush=True,
            )
    if args.save:
        torch.save(
            {"vae": vae.state_dict(), "prior_logits": pyro.param("prior_logits").detach(), "steps": args.steps},
            args.save,
        )
    name = f"armgrad.pyro.ELBO({args.estimator!r})" if args.elbo == "armgrad" else type(elbo).__name__
    if args.elbo == "tracegraph":
        name += f" (baseline: {args.baseline})"
    result = {
        "elbo": name,
        "steps": args.steps,
        "seed": args.seed,
        "test_elbo": rows[-1]["test_elbo"],
        "seconds_per_step": rows[-1]["seconds"] / args.steps,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return result


if __name__ == "__main__":
    main()
