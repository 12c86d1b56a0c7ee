"""A study: every (model, estimator, seed) VAE run, trained in batches of runs, here or on a cluster.

``armgrad study --model linear --estimator disarm arm reinforce_loo reinforce --seed 0 1 2 ...`` makes
one run folder per combination, ``OUT/<model>-<estimator>-seed<seed>`` (the names ``scripts/study.sh``
uses, so ``armgrad report OUT`` reads them), groups the runs that can share a process (one model;
estimators that evaluate ``f`` at binary points with the same budget; see
:func:`armgrad.experiments.vae.check_runs`) into batches of at most ``runs_per_process``, and trains
each batch side by side with :func:`~armgrad.experiments.vae.train_runs`:

- ``launcher="local"``: the batches one after another, in this process;
- ``launcher="submitit"``: each batch a job of ``submitit`` (``pip install submitit``): on a SLURM
  cluster (``cluster="slurm"``), or as local processes (``cluster="local"``, all at once).

The same command resumes a study (``resume=True``): finished runs are skipped, the others continue
from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import torch

from .. import multisample
from ..estimators.base import BinaryPointEstimator
from . import locks
from .reporting import log
from .training import ConfigurationError, prepare_out
from .vae import VAEConfig, default_num_samples, vae_estimator

LAUNCHERS = ("local", "submitit")


def study_configs(base: VAEConfig, models, estimators, seeds, out, num_samples: int | None = None) -> list:
    """One config per (model, estimator, seed), each in its own folder under ``out``; with
    ``num_samples=None`` each estimator gets its smallest budget of at least 2 for these latents."""
    configs = []
    for m, e, s in itertools.product(models, estimators, seeds):
        config = dataclasses.replace(base, model=m, estimator=e, seed=s, out=str(Path(out) / f"{m}-{e}-seed{s}"))
        budget = default_num_samples(config) if num_samples is None else num_samples
        configs.append(dataclasses.replace(config, num_samples=budget))
    return configs


def finished(config) -> bool:
    path = Path(config.out) / "results.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("steps") == config.steps
    except (OSError, ValueError):
        return False


def batches(configs: list, runs_per_process: int | None = None) -> list:
    """The runs grouped into batches that can train in one process, each of at most ``runs_per_process``."""
    groups: dict = {}
    for config in configs:
        spec = multisample.get_estimator(config.estimator) if config.objective == "iwae" else vae_estimator(config)
        if spec.learned:
            raise ConfigurationError(
                f"{config.estimator} learns control parameters: train it one run per process with armgrad vae"
            )
        mixable = (
            config.objective == "elbo"
            and spec.evaluations(config.num_samples, config.event_shape) == config.num_samples
            and isinstance(spec, BinaryPointEstimator)  # what RunMixture.check accepts
        )
        key = (config.model, config.num_samples, None if mixable else spec.name)
        groups.setdefault(key, []).append(config)
    if not groups:
        return []
    size = runs_per_process or max(len(g) for g in groups.values())
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def run_batch(configs: list, resume: bool, threads: int | None = None) -> list:
    """One batch, in this process (what a submitit job runs)."""
    from .vae import train_runs

    if threads:
        torch.set_num_threads(threads)
    return train_runs(configs, resume=resume)


def run_study(
    configs: list,
    resume: bool = False,
    overwrite: bool = False,
    runs_per_process: int | None = None,
    launcher: str = "local",
    cluster: str = "local",
    threads: int | None = None,
    slurm_partition: str | None = None,
    timeout_min: int = 4320,
) -> list:
    """Check every run folder, then train the unfinished runs in batches; return the results of the trained runs."""
    if launcher not in LAUNCHERS:
        raise ConfigurationError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    todo = [c for c in configs if not (resume and finished(c))]
    for config in configs:
        if config not in todo:
            log.info("%s: finished, skipped", config.out)
    plan = batches(todo, runs_per_process)  # refuses what cannot share a process before any folder is made
    with locks.hold([c.out for c in todo]):  # every run folder, held by this process until the study ends
        for config in todo:
            prepare_out(config, resume=resume, overwrite=overwrite)
        for i, batch in enumerate(plan):
            log.info(
                "batch %d of %d: %d runs (%s)", i + 1, len(plan), len(batch), ", ".join(Path(c.out).name for c in batch)
            )
        if launcher == "local":
            return [r for batch in plan for r in run_batch(batch, resume, threads)]
        return _submit(plan, resume, cluster, threads, slurm_partition, timeout_min, Path(configs[0].out).parent)


class BatchJob:
    """A batch as a submitit job that SLURM can requeue: on preemption or at its time limit (submitit's
    signal), ``checkpoint`` resubmits the same batch with ``resume=True``, which continues every run
    from its last checkpoint (at most ``--checkpoint-every`` steps are lost). A submitit
    ``Checkpointable`` by its interface: ``__call__`` and ``checkpoint``."""

    def __call__(self, configs: list, resume: bool, threads: int | None = None) -> list:
        return run_batch(configs, resume, threads)

    def checkpoint(self, configs: list, resume: bool, threads: int | None = None):
        import submitit

        return submitit.helpers.DelayedSubmission(BatchJob(), configs, True, threads)


def _submit(plan, resume, cluster, threads, slurm_partition, timeout_min, out: Path) -> list:
    try:
        import submitit
    except ImportError:
        raise ModuleNotFoundError("--launcher submitit needs the submitit package: pip install submitit") from None
    executor = submitit.AutoExecutor(folder=out / "submitit", cluster=cluster)
    parameters = {"timeout_min": timeout_min, "cpus_per_task": threads or 1, "name": "armgrad-study"}
    if slurm_partition:
        parameters["slurm_partition"] = slurm_partition
    executor.update_parameters(**parameters)
    jobs = [executor.submit(BatchJob(), batch, resume, threads) for batch in plan]
    for job, batch in zip(jobs, plan):
        log.info("submitted job %s: %s", job.job_id, ", ".join(Path(c.out).name for c in batch))
    return [r for job in jobs for r in job.result()]
