"""A Gaussian mixture in Pyro whose assignments are categorical latents, trained with ``armgrad.pyro.ELBO``.

    python examples/pyro_gmm.py                          # armgrad.pyro.ELBO("disarm"): categorical DisARM
    python examples/pyro_gmm.py --elbo tracegraph        # Pyro's TraceGraph_ELBO, to compare
    python examples/pyro_gmm.py --estimator reinforce_loo

The data: 300 points from three well-separated 2-d Gaussians (a fixed seed). The model: a uniform
prior over K = 3 components, learned component means, unit variances; the guide: one learned vector
of assignment logits per point (a Categorical site in a subsampled plate of 50). Adam 0.05 on
everything. At the end, at the trained parameters, the variance of the gradient of the assignment
logits over ``--draws`` estimates is measured for armgrad's ELBO and for ``TraceGraph_ELBO`` (the
score-function estimator, no baseline) on the same batch, at equal cost: armgrad's two evaluations per
site are three runs of guide and model (the ancestral one and two branches), TraceGraph's three
particles are three runs; and the exact ``-ELBO`` by enumeration
(``TraceEnum_ELBO``) is printed with the learned means; a JSON line ends the output.
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate

import armgrad.pyro

K, N, BATCH = 3, 300, 50
TRUE_MEANS = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])


def make_data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(K, (N,), generator=g)
    return TRUE_MEANS[labels] + torch.randn(N, 2, generator=g)


def model(x, batch=BATCH):
    means = pyro.param("means", torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    with pyro.plate("data", len(x), subsample_size=batch) as idx:
        z = pyro.sample("z", dist.Categorical(logits=torch.zeros(K)))
        pyro.sample("x", dist.Normal(means[z], 1.0).to_event(1), obs=x[idx])


def guide(x, batch=BATCH):
    logits = pyro.param("assignment_logits", torch.zeros(len(x), K))
    with pyro.plate("data", len(x), subsample_size=batch) as idx:
        pyro.sample("z", dist.Categorical(logits=logits[idx]))


def make_elbo(name: str, estimator: str):
    if name == "tracegraph":
        return TraceGraph_ELBO()
    return armgrad.pyro.ELBO(estimator, num_samples=2)


def gradient_variance(elbo, x, draws: int, seed: int) -> float:
    """Mean over the assignment logits of the variance of their gradient, over ``draws`` estimates on one batch."""
    logits = pyro.param("assignment_logits").unconstrained()
    grads = []
    for d in range(draws):
        pyro.set_rng_seed(seed)  # the same batch every draw (the subsample), other randomness after it
        torch.manual_seed(seed * 10_000 + d + 1)
        for name in pyro.get_param_store():
            pyro.param(name).unconstrained().grad = None
        elbo.loss_and_grads(model, guide, x)  # what SVI calls; accumulates into .grad
        grads.append(logits.grad.flatten().clone())
    grads = torch.stack(grads)
    moving = grads.abs().sum(0) > 0  # the batch's rows: the others get no gradient
    return float(grads[:, moving].var(0).mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elbo", choices=["armgrad", "tracegraph"], default="armgrad")
    parser.add_argument("--estimator", default="disarm", help="with --elbo armgrad: a categorical estimator")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=200, help="gradient estimates for the variance at the end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    x = make_data()
    elbo = make_elbo(args.elbo, args.estimator)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=elbo)
    started = time.perf_counter()
    for _ in range(args.steps):
        svi.step(x)
    seconds = time.perf_counter() - started
    exact = TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model), config_enumerate(guide), x, N)
    variances = {
        "armgrad.pyro.ELBO(disarm)": gradient_variance(armgrad.pyro.ELBO("disarm", 2), x, args.draws, args.seed),
        "armgrad.pyro.ELBO(reinforce_loo)": gradient_variance(
            armgrad.pyro.ELBO("reinforce_loo", 2), x, args.draws, args.seed
        ),
        "TraceGraph_ELBO(num_particles=3)": gradient_variance(
            TraceGraph_ELBO(num_particles=3), x, args.draws, args.seed
        ),
    }
    means = pyro.param("means").detach()
    order = means[:, 0].argsort()  # the components in the order of the true ones (by x coordinate)
    result = {
        "trained_with": "TraceGraph_ELBO" if args.elbo == "tracegraph" else f"armgrad.pyro.ELBO({args.estimator})",
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "exact_negative_elbo": round(exact, 2),
        "means": [[round(v, 2) for v in row] for row in means[order].tolist()],
        "true_means": TRUE_MEANS.tolist(),
        "assignment_gradient_variance": {k: float(f"{v:.4g}") for k, v in variances.items()},
    }
    print(f"trained with {result['trained_with']}, {args.steps} steps in {seconds:.1f} s")
    print(f"exact -ELBO (TraceEnum_ELBO, all {N} points): {exact:.2f}; learned means {result['means']}")
    print("gradient variance of the assignment logits at these parameters (3 runs of guide and model each):")
    for name, value in variances.items():
        print(f"  {name:34s} {value:.4g}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
