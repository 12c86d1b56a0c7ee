"""ARM and its family for Pyro: an ELBO whose Bernoulli and categorical guide sites get armgrad's estimators.

``armgrad.pyro.ELBO(estimator="disarm", num_samples=2)`` is a :class:`pyro.infer.ELBO`: pass it to
``SVI`` where ``Trace_ELBO()`` or ``TraceGraph_ELBO()`` would go. Install with
``pip install armgrad[pyro]``.

What each part of the gradient is (docs/design.md section 4, the per-layer recipe, in the guide's
execution order). One particle runs the guide once (the ancestral sample) and the model against it.

- Every non-reparameterised ``Bernoulli`` site of the guide (``logits=`` or ``probs=``, scalar,
  batched in plates or ``.to_event``): the estimator draws its points ``b^(1..S)`` at the site's
  logits; for each point the guide is run again with the sites before it held at the ancestral
  sample, the site set to ``b^(s)`` and every later site drawn afresh, then the model against that
  trace. ``f(b^(s))`` is ``log p(x, z) - log q(z)`` of that run (the guide's terms from the site on;
  the earlier ones do not depend on the site), summed per element of the site's plates as
  :class:`pyro.infer.Trace_ELBO` does: elements of a plate get independent estimates, and the units
  of one element (``.to_event`` dims) are one joint vector for the estimator. The estimate ``g``
  enters through ``g . logits``, so it flows on to whatever produced the logits (the guide's
  networks, earlier reparameterised sites).
- Every run made (the ancestral one and each branch) is a draw from the guide, so the value and
  the pathwise part of the gradient (the model's parameters, reparameterised sites) are their mean,
  as ``armgrad.network.chain_estimate`` does: every run paid for trains the model. The exception is
  an estimator that weights its points (IndeCateR sets each variable to every category): its
  branches are not draws from the guide and give the site's gradient only.
- Every non-reparameterised ``Categorical`` or ``OneHotCategorical`` site gets the same recipe with the
  categorical form of the estimator (``armgrad.categorical``): its points are one-hot vectors of the
  site's ``C`` categories (written into the site as indices for a ``Categorical``), its logits
  ``(*batch, D, C)`` with ``D`` the elements of the site's event.
- A site may choose its own estimator and budget in Pyro's ``infer`` dict,
  ``infer={"armgrad": {"estimator": "arsm", "num_samples": 4}}``; the constructor's are the default,
  looked up in each site's family (``"disarm"`` is binary DisARM at a Bernoulli site, categorical
  DisARM at a categorical one).
- Any other non-reparameterised site (Poisson, ...) is refused, unless ``other_sites="score"``: then
  it gets ``Trace_ELBO``'s score-function term.

The branches of one site run one after the other (``S`` guide and model runs per site and
particle), or with ``vectorize_branches=True`` as one run inside an extra plate; sites always run
one after the other. ``loss``, ``loss_and_grads`` and ``differentiable_loss`` return the mean
``-ELBO`` over those runs, the same number at the same seed (Pyro's contract for an ELBO): unbiased,
summed over plates and scaled by ``poutine.scale`` and subsampling. Randomness comes from torch's
global generator, so ``pyro.set_rng_seed`` fixes it.

Only wrappers that keep a Bernoulli's values (``Independent``/``.to_event``, ``.expand``, ``.mask``)
make a Bernoulli site; a ``TransformedDistribution`` of a Bernoulli (a +-1 spin, say) takes other
values and is another site (refused, or with ``other_sites="score"`` given the score term). Under
validation, a guide configured for enumeration gets Pyro's warning, as ``Trace_ELBO`` gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import Bernoulli, Categorical, Independent, OneHotCategorical
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import is_identically_zero
from pyro.infer.elbo import ELBO as _PyroELBO
from pyro.infer.util import MultiFrameTensor, is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape, warn_if_nan

from .estimators import get_estimator
from .estimators.base import BINARY, BinaryPointEstimator, evaluate
from .families import BERNOULLI, CATEGORICAL

__all__ = ["ELBO"]

OTHER_SITES = ("error", "score")


# the wrappers whose values are their base distribution's values: a Bernoulli inside them is a Bernoulli site
VALUE_KEEPING = (Independent, ExpandedDistribution, MaskedDistribution)


def discrete_of(fn):
    """The ``Bernoulli``, ``Categorical`` or ``OneHotCategorical`` inside ``fn`` through wrappers that keep its
    values (``.to_event``, ``.expand``, ``.mask``), or None: a transformed one takes other values."""
    while not isinstance(fn, (Bernoulli, Categorical, OneHotCategorical)) and isinstance(fn, VALUE_KEEPING):
        fn = fn.base_dist
    return fn if isinstance(fn, (Bernoulli, Categorical, OneHotCategorical)) else None


def bernoulli_of(fn):
    """The ``Bernoulli`` inside ``fn`` through wrappers that keep its values, or None."""
    inner = discrete_of(fn)
    return inner if isinstance(inner, Bernoulli) else None


def family_of_site(site):
    """The family armgrad estimates a guide site with: Bernoulli, categorical, or None (another kind of site)."""
    if (
        site["type"] != "sample"
        or site["is_observed"]
        or site_is_subsample(site)
        or site["fn"].has_rsample
        or (inner := discrete_of(site["fn"])) is None
    ):
        return None
    return BERNOULLI if isinstance(inner, Bernoulli) else CATEGORICAL


def check_estimator(estimator, family, num_samples, where: str = ""):
    """The estimator ``estimator`` names in ``family``, if armgrad.pyro can use it there at this budget;
    else one line saying why (``where``: the site, for a per-site choice)."""
    try:
        est = get_estimator(estimator, family)
    except ValueError as error:
        raise ValueError(f"armgrad.pyro.ELBO{where}: {error}") from None
    if not isinstance(est, BinaryPointEstimator) or est.needs_df_db or est.learned:
        how = {True: "differentiates the objective (df/db)"}.get(est.needs_df_db) or (
            "learns control parameters" if est.learned else f"evaluates the objective at {est.evaluates_f_at} points"
        )
        raise ValueError(
            f"armgrad.pyro.ELBO{where}: estimator '{est.name}' {how}; armgrad.pyro uses estimators that evaluate "
            f"it at discrete points only: {', '.join(binary_point_estimators(family))}"
        )
    return est


def first_line(error: BaseException, limit: int = 120) -> str:
    """The first line of an error's message, at most ``limit`` characters: what a one-line refusal quotes."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _describe(site) -> str:
    return f"site '{site['name']}' ({type(site['fn']).__name__})"


class ELBO(_PyroELBO):
    """``-ELBO`` and its gradient, with armgrad's ``estimator`` at every Bernoulli and categorical site of the guide.

    Args:
        estimator: a name (or an estimator object) that evaluates the objective at discrete points and does
            not differentiate it: at Bernoulli sites ``arm``, ``disarm``, ``ar``, ``arms``, ``reinforce``,
            ``reinforce_loo``; at categorical sites its categorical form (``disarm``, ``disarm_iw``,
            ``carms``, ``arsm``, ``ars``, ``reinforce_loo``, ...). A site's ``infer["armgrad"]`` overrides it.
        num_samples: the budget, in runs of the guide's later sites and the model per site and particle
            (even for pair estimators; ARSM's multiples of ``C(C-1)/2 + 1``), as in :func:`armgrad.estimate`.
        other_sites: ``"error"`` (default) refuses non-reparameterised sites that are not Bernoulli or
            categorical;
            ``"score"`` gives them Pyro's score-function term.
        vectorize_branches: run the ``num_samples`` branches of a site as one run of the guide and the
            model, inside a plate left of every other (as ``vectorize_particles`` does for particles);
            the model and guide must then broadcast over extra leading dims. Default: one run each.
        pyro_elbo_options: ``num_particles``, ``max_plate_nesting``, ``vectorize_particles``, ... as
            for any :class:`pyro.infer.ELBO`.
    """

    def __init__(
        self,
        estimator="disarm",
        num_samples: int = 2,
        *,
        other_sites: str = "error",
        vectorize_branches: bool = False,
        **pyro_elbo_options,
    ):
        forms, refusals = {}, []  # the estimator in each family that has it (a name may have both, e.g. disarm)
        for family in (BERNOULLI, CATEGORICAL):
            try:
                forms[family] = check_estimator(estimator, family, num_samples)
            except ValueError as error:
                refusals.append(error)
        if not forms:
            raise refusals[0]  # the Bernoulli form's reason first, as the name was looked up there first
        est = next(iter(forms.values()))
        if est.family is BERNOULLI:
            est.check_budget(num_samples)  # a categorical budget depends on each site's C: checked there
        if other_sites not in OTHER_SITES:
            raise ValueError(f"armgrad.pyro.ELBO: other_sites must be one of {OTHER_SITES}, got {other_sites!r}")
        super().__init__(**pyro_elbo_options)
        self.estimator = est  # the default, in its first family; each site gets its family's form (site_estimator)
        self.default = estimator
        self.num_samples = num_samples
        self.other_sites = other_sites
        self.vectorize_branches = vectorize_branches

    def __repr__(self) -> str:
        return f"armgrad.pyro.ELBO(estimator={self.estimator.name!r}, num_samples={self.num_samples})"

    def site_estimator(self, site):
        """``(estimator, num_samples)`` for a Bernoulli or categorical guide site: the site's own choice,
        ``infer={"armgrad": {"estimator": ..., "num_samples": ...}}``, else the constructor's, in the site's
        family; the budget checked against the site's shape."""
        choice = site["infer"].get("armgrad", {})
        unknown = set(choice) - {"estimator", "num_samples"}
        where = f" at site '{site['name']}'"
        if unknown:
            raise ValueError(
                f"armgrad.pyro.ELBO{where}: infer['armgrad'] takes 'estimator' and 'num_samples', got {sorted(unknown)}"
            )
        family = family_of_site(site)
        num_samples = choice.get("num_samples", self.num_samples)
        est = check_estimator(choice.get("estimator", self.default), family, num_samples, where)
        try:
            est.check_budget(num_samples, family.event_shape(_site_logits(site).shape))
        except (ValueError, TypeError) as error:
            raise ValueError(f"armgrad.pyro.ELBO{where}: {error}") from None
        return est, num_samples

    # ---- Pyro's interface: the traces of one particle, and the three losses -------------------------

    def _get_trace(self, model, guide, args, kwargs):
        """One particle's model and guide traces, checked, as Pyro's ELBOs return them."""
        run = ancestral_run(model, guide, args, kwargs, self.max_plate_nesting)
        check_sites(run, self.other_sites, self.site_estimator, self.max_plate_nesting)
        return run.model_trace, run.guide_trace

    def _runs(self, model, guide, args, kwargs):
        """One :class:`AncestralRun` per particle (the model and guide vectorised over particles if asked)."""
        if (self.vectorize_particles or self.vectorize_branches) and self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        if self.vectorize_particles:
            model, guide = self._vectorized_num_particles(model), self._vectorized_num_particles(guide)
        for _ in range(1 if self.vectorize_particles else self.num_particles):
            run = ancestral_run(model, guide, args, kwargs, self.max_plate_nesting)
            check_sites(run, self.other_sites, self.site_estimator, self.max_plate_nesting)
            yield run

    def _particles(self, model, guide, args, kwargs):
        """``(-elbo, -surrogate)`` of every particle, each divided by the number of particles."""
        for run in self._runs(model, guide, args, kwargs):
            loss, surrogate = particle(
                run, args, kwargs, self.site_estimator, self.vectorize_branches, self.max_plate_nesting
            )
            yield loss / self.num_particles, surrogate / self.num_particles, run

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The estimate of ``-ELBO`` (a float) that :meth:`loss_and_grads` returns at the same seed: the mean
        over every run (ancestral and branches) of ``num_particles`` particles; no gradient."""
        with torch.no_grad():
            loss = sum(loss_p for loss_p, _, _ in self._particles(model, guide, args, kwargs))
        warn_if_nan(loss, "loss")  # a float: pyro checks it as it does tensors
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-ELBO`` as a tensor whose gradient is the estimators' (discrete sites) and pathwise (the rest)."""
        loss, surrogate = 0.0, 0.0
        for loss_p, surrogate_p, _ in self._particles(model, guide, args, kwargs):
            loss, surrogate = loss + loss_p, surrogate + surrogate_p
        warn_if_nan(surrogate, "loss")  # type: ignore[call-overload]
        return loss + (surrogate - torch_item(surrogate))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """``loss`` and, accumulated into ``.grad`` of every parameter it reaches, the gradient estimate."""
        loss = 0.0
        for loss_p, surrogate_p, run in self._particles(model, guide, args, kwargs):
            loss += loss_p
            trainable = any(
                site["type"] == "param" for trace in (run.model_trace, run.guide_trace) for site in trace.nodes.values()
            )
            if trainable and getattr(surrogate_p, "requires_grad", False):
                surrogate_p.backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")  # type: ignore[call-overload]
        return loss


# ---- the mathematics, in functions without side effects ----------------------------------------------


@dataclass
class AncestralRun:
    """One particle's ancestral run: the model's and the guide's traces (subsample sites pruned, log-probs and
    score parts computed), the guide's full trace (subsample sites kept, for replaying), and the model and
    guide that made them (vectorised over particles if asked), which the branches run again."""

    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    full_guide: poutine.Trace
    model: Callable
    guide: Callable


def ancestral_run(model, guide, args, kwargs, max_plate_nesting) -> AncestralRun:
    """Run the guide, then the model against it: an :class:`AncestralRun`."""
    full_guide = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=full_guide)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(full_guide), prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    if is_validation_enabled():
        check_if_enumerated(guide_trace)  # a guide configured for enumeration is sampled here: say so
        for trace in (model_trace, guide_trace):
            for site in trace.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, max_plate_nesting)
    return AncestralRun(model_trace, guide_trace, full_guide, model, guide)


def check_sites(run: AncestralRun, other_sites: str, site_estimator: Callable, max_plate_nesting) -> None:
    """Refuse, with one line, what armgrad.pyro cannot estimate: model and guide sites that do not match, a
    guide without discrete sites, a site whose estimator or budget does not fit it, other sites unless scored."""
    model_trace, guide_trace = run.model_trace, run.guide_trace

    def latent(trace):
        return {n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}

    if latent(model_trace) - latent(guide_trace):
        raise ValueError(
            f"armgrad.pyro.ELBO: latent sites of the model not in the guide: "
            f"{sorted(latent(model_trace) - latent(guide_trace))}; the guide must sample every latent site of the model"
        )
    if latent(guide_trace) - latent(model_trace):
        raise ValueError(
            f"armgrad.pyro.ELBO: guide sites not in the model: {sorted(latent(guide_trace) - latent(model_trace))}; "
            "every sample site of the guide must be a latent site of the model"
        )
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
    discrete = [site for site in guide_trace.nodes.values() if family_of_site(site) is not None]
    if not discrete:
        raise ValueError(
            "armgrad.pyro.ELBO: the guide has no Bernoulli or categorical sample site, so armgrad has nothing "
            "to estimate; use pyro.infer.Trace_ELBO"
        )
    for site in discrete:
        site_estimator(site)  # every site's estimator and budget, checked before any branch runs
    if other_sites == "error":
        for site in guide_trace.nodes.values():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and not getattr(site["fn"], "has_rsample", False)
                and family_of_site(site) is None
            ):
                raise ValueError(
                    f"armgrad.pyro.ELBO: {_describe(site)} is neither reparameterised nor Bernoulli nor "
                    "categorical; armgrad estimates those. Pass other_sites='score' to give it Pyro's "
                    "score-function gradient, or enumerate it with TraceEnum_ELBO"
                )


def particle(run: AncestralRun, args, kwargs, site_estimator, vectorize_branches, max_plate_nesting):
    """``(-elbo, -surrogate)`` of one particle, each the mean over its configurations.

    The configurations are the ancestral run and every branch of every discrete site: each is a draw
    from the guide, so the mean of their ``log p - log q`` estimates the ELBO, and the mean of their
    pathwise terms (the model's log-probabilities, the reparameterised guide sites' ``-log q``) is the
    pathwise part of its gradient, with every run paid for. The discrete sites' estimates ``g . logits``
    and the score terms of ``other_sites="score"`` (from the ancestral run) are added once.
    """
    total = _Configurations()
    total.add(run.model_trace, run.guide_trace)
    surrogate = 0.0
    log_r = None
    for name, site in run.guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if family_of_site(site) is not None:
            est, num_samples = site_estimator(site)
            logits, g, branches = site_gradient(
                name, run, args, kwargs, est, num_samples, vectorize_branches, max_plate_nesting
            )
            if branches is not None:
                total.merge(branches)
            surrogate = surrogate + (g * logits).sum()
            continue
        score = site["score_parts"].score_function
        if not is_identically_zero(score):  # other_sites="score": Trace_ELBO's term
            if log_r is None:
                log_r = _log_ratio(run.model_trace, run.guide_trace)
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score).sum()
    return -total.elbo(), -(total.pathwise() + surrogate)


def site_gradient(name, run: AncestralRun, args, kwargs, est, num_samples, vectorize_branches, max_plate_nesting):
    """The site's logits (``(*batch, D)``, or ``(*batch, D, C)`` for a categorical site), the estimator's
    gradient of the ELBO w.r.t. them, and the branches' runs as draws from the guide (``None`` for an
    estimator that weights its points, such as IndeCateR: its branches are not draws from the guide, and an
    equal-weight mean of their runs would be biased; they give the gradient only).

    For each point the estimator draws, the guide runs again with the sites before this one held at the
    ancestral run (:func:`sites_before`), this site at the point and every later site drawn afresh, then
    the model against it; ``f`` is that run's ``log p - log q`` (the guide's terms from the site on),
    summed per element of the site's plates.
    """
    site = run.full_guide.nodes[name]
    value_shape = site["value"].shape  # type: ignore[union-attr]  # a sample site's value is a tensor
    logits, family = _site_logits(site), family_of_site(site)
    assert family is not None  # particle() calls this for discrete sites only
    batch_shape = logits.shape[: len(logits.shape) - family.event_dims]
    to_value = _value_maker(site)
    earlier = set(sites_before(run.full_guide, name).nodes)  # their log q does not depend on the site
    held = sites_before(run.full_guide, name)
    frames = site["cond_indep_stack"]
    branch_runs = _Configurations()

    def one_run(value, wrap=lambda fn: fn, count=1):
        """``log p - log q`` of one run of the later guide sites and the model, with the site at ``value``."""
        at_value = _with_site(held, site, value)
        guide_trace = poutine.trace(poutine.replay(wrap(run.guide), trace=at_value)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(wrap(run.model), trace=guide_trace)).get_trace(*args, **kwargs)
        guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
        branch_runs.add(model_trace, guide_trace, count)
        return _log_ratio(model_trace, guide_trace, skip=earlier), guide_trace.nodes[name]["cond_indep_stack"]

    def f(b):  # (S, *batch, *event) -> (S, *batch)
        if not vectorize_branches:  # one run per point
            return torch.stack(
                [
                    torch.broadcast_to(
                        torch.as_tensor(one_run(to_value(point, value_shape))[0].sum_to(frames)), batch_shape
                    )
                    for point in b
                ]
            )
        # all points in one run, along a plate left of every other
        pad = (1,) * (max_plate_nesting - len(batch_shape))
        dim = -(max_plate_nesting + 1)
        branches = pyro.plate("armgrad_branches", len(b), dim=dim)
        try:
            log_r, branch_frames = one_run(to_value(b, (len(b), *pad, *value_shape)), branches, count=len(b))
        except (ValueError, RuntimeError, IndexError, AssertionError, TypeError) as error:
            raise ValueError(
                f"armgrad.pyro.ELBO(vectorize_branches=True): the {len(b)} branches of site '{name}' run as "
                f"one run of the guide and the model inside a plate at dim {dim}, and the model or guide "
                f"does not broadcast over it ({type(error).__name__}: {first_line(error)}); the vectorised "
                "branches need a model and guide that broadcast over a leading dim: pass "
                "vectorize_branches=False to run them one after another"
            ) from error
        out = torch.broadcast_to(torch.as_tensor(log_r.sum_to(branch_frames)), (len(b), *pad, *batch_shape))
        return out.reshape(len(b), *batch_shape)

    phi = logits.detach()
    noise = est.draw_noise(num_samples, phi)
    b = est.sample(phi, noise)
    g, weights = est.combine(evaluate(f, b, est.family.event_dims).detach(), b, phi, noise)
    return logits, g, branch_runs if weights is None else None


class _Configurations:
    """Sums over runs of guide and model: the ELBO (a float) and the pathwise surrogate (attached)."""

    def __init__(self):
        self.count, self.value, self.surrogate = 0, 0.0, 0.0

    def add(self, model_trace, guide_trace, count: int = 1) -> None:
        """One run (``count`` configurations when they are batched in a plate: its sums are theirs)."""
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                self.value += torch_item(site["log_prob_sum"])
                self.surrogate = self.surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                self.value -= torch_item(site["log_prob_sum"])
                entropy = site["score_parts"].entropy_term
                if not is_identically_zero(entropy):  # a reparameterised site's -log q, pathwise
                    self.surrogate = self.surrogate - entropy.sum()
        self.count += count

    def merge(self, other: _Configurations) -> None:
        """Add the runs of ``other``."""
        self.count += other.count
        self.value += other.value
        self.surrogate = self.surrogate + other.surrogate

    def elbo(self) -> float:
        return self.value / self.count

    def pathwise(self):
        return self.surrogate / self.count


def _site_logits(site) -> torch.Tensor:
    """A Bernoulli site's logits ``(*batch, D)`` (its event flattened to ``D`` units), or a categorical site's
    ``(*batch, D, C)`` (``D`` variables: a ``Categorical``'s event elements, a ``OneHotCategorical``'s events
    but the last dim), with their graph."""
    fn, value_shape = site["fn"], site["value"].shape
    inner = discrete_of(fn)
    batch_shape = value_shape[: len(value_shape) - len(fn.event_shape)]
    if isinstance(inner, Bernoulli):
        return torch.broadcast_to(inner.logits, value_shape).reshape(*batch_shape, -1)
    categories = inner.logits.shape[-1]
    shape = value_shape if isinstance(inner, OneHotCategorical) else (*value_shape, categories)
    return torch.broadcast_to(inner.logits, shape).reshape(*batch_shape, -1, categories)


def _value_maker(site):
    """``to_value(points, shape)``: estimator points (``(..., D)`` binary, ``(..., D, C)`` one-hot) as values of
    the site of ``shape`` (indices for a ``Categorical``, in the dtype of the site's value)."""
    inner, dtype = discrete_of(site["fn"]), site["value"].dtype
    if isinstance(inner, Categorical):
        return lambda points, shape: points.argmax(-1).to(dtype).reshape(shape)
    return lambda points, shape: points.to(dtype).reshape(shape)


def _log_ratio(model_trace, guide_trace, skip=frozenset()) -> MultiFrameTensor:
    """``log p - log q`` as plate-indexed terms, leaving out the guide's sites in ``skip``."""
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    terms = MultiFrameTensor()
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            terms.add((site["cond_indep_stack"], site["log_prob"].detach()))
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and name not in skip:
            terms.add((site["cond_indep_stack"], -site["log_prob"].detach()))
    return terms


def sites_before(trace, name):
    """A trace holding the sample sites (subsample sites included) that ran before ``name``: what a branch
    replays from the ancestral run."""
    out = poutine.Trace()
    for other, site in trace.nodes.items():
        if other == name:
            break
        if site["type"] == "sample":
            out.add_node(other, **site)
    return out


def _with_site(earlier, site, value):
    held = earlier.copy()
    held.add_node(site["name"], **{**site, "value": value})
    return held


def binary_point_estimators(family=BERNOULLI) -> list:
    """The estimators of ``family`` that armgrad.pyro can use: they evaluate the objective at discrete points
    only, without differentiating it or learning controls."""
    from .estimators import REGISTRY, select

    table = REGISTRY[family]
    return [
        name
        for name in select(table, evaluates_f_at=BINARY, needs_df_db=False, learned=False)
        if isinstance(table[name], BinaryPointEstimator)
    ]
