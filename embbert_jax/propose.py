"""Which configuration a worker trains next: memory-spread grid order, or a multi-objective sampler.

Both strategies only ever return a candidate that fits the budget and whose config hash is not in the
ledger yet; the caller holds the study's lock, so the answer cannot be taken by another worker before it
is written down.

* grid: the sweep trains the first --max-trials candidates of space.spread_order (coarse to fine along
  log memory: an even sample of the memory range; with enough trials, the exhaustive grid; with a train
  grid of M member trials per config, the first --max-trials / M), smallest first: when a large config
  reaches its early-stopping rungs, the smaller configs it must beat have already been measured, so a
  hopeless one is stopped instead of trained to the end.
* tpe / nsga2: an Optuna sampler (TPE multivariate with constant liar, or NSGA-II) over the space's
  categorical parameters with two objectives (maximise the validation metric, minimise memory). It runs
  on a throw-away in-memory study that mirrors the ledger: completed trials with their values, pending
  ones (RUNNING/WAITING) as RUNNING so that TPE's constant liar steers away from them. Proposals that do
  not fit the budget or are already in the ledger are rejected in the shadow study and never reach the
  ledger: the budget is a hard filter, not a penalty that costs trials. After `MAX_PROPOSALS` rejections
  the next grid candidate is used instead.
"""

from __future__ import annotations

import datetime
import warnings
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from embbert_jax import space as space_lib

MAX_PROPOSALS = 100
# System attributes the samplers keep on trials (NSGA-II's generation); copied to and from the ledger.
SAMPLER_ATTR_PREFIXES = ("NSGAIISampler:", "TPESampler:")
DIRECTIONS = ("maximize", "minimize")


def next_in_grid(ordered: Sequence[space_lib.Candidate], taken: set[str], limit: int,
                 policy: str) -> space_lib.Candidate | None:
  """The smallest untaken candidate among the first `limit` of the spread order, else the next one."""
  head = [c for c in ordered[:limit] if c.hash not in taken]
  if head:
    return min(head, key=lambda c: (c.total(policy), c.hash))
  return next((c for c in ordered[limit:] if c.hash not in taken), None)


def make_sampler(strategy: str, seed: int, max_trials: int) -> optuna.samplers.BaseSampler:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if strategy == "tpe":
      # group=True: families are conditional sub-spaces; constant_liar: pending trials count as bad.
      return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                                        n_startup_trials=min(10, max(3, max_trials // 4)))
    if strategy == "nsga2":
      # The default population of 50 would make a small sweep one random generation.
      return optuna.samplers.NSGAIISampler(population_size=min(16, max(4, max_trials // 4)), seed=seed)
  raise ValueError(f"unknown sampler strategy {strategy!r}")


def _sampler_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in attrs.items() if k.startswith(SAMPLER_ATTR_PREFIXES)}


def _shadow(ledger_trials: Sequence[FrozenTrial], dists: dict, sampler) -> optuna.Study:
  storage = optuna.storages.InMemoryStorage()
  study = optuna.create_study(storage=storage, directions=list(DIRECTIONS), sampler=sampler)
  study_id = storage.get_study_id_from_name(study.study_name)
  now = datetime.datetime.now()
  for t in sorted(ledger_trials, key=lambda t: t.number):
    if not t.params or any(k not in dists for k in t.params):
      continue  # a trial of another space version: nothing the sampler can use
    ds = {k: dists[k] for k in t.params}
    if any(v not in ds[k].choices for k, v in t.params.items()):
      continue
    attrs = _sampler_attrs(t.system_attrs)
    if t.state == TrialState.COMPLETE and t.values:
      study.add_trial(optuna.trial.create_trial(params=t.params, distributions=ds, values=t.values,
                                                system_attrs=attrs))
    elif t.state in (TrialState.RUNNING, TrialState.WAITING):
      storage.create_new_trial(study_id, template_trial=FrozenTrial(
          number=0, state=TrialState.RUNNING, value=None, values=None, datetime_start=now,
          datetime_complete=None, params=t.params, distributions=ds, user_attrs={}, system_attrs=attrs,
          intermediate_values={}, trial_id=0))
    elif t.state == TrialState.PRUNED:
      study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params=t.params, distributions=ds,
                                                system_attrs=attrs))
  return study


def from_sampler(strategy: str, space_cfg, ledger_trials: Sequence[FrozenTrial],
                 fitting: dict[str, space_lib.Candidate], taken: set[str], num_labels: int, seed: int,
                 max_trials: int) -> tuple[space_lib.Candidate | None, dict[str, Any]]:
  """(candidate, sampler system attrs for its ledger trial), or (None, {}) after MAX_PROPOSALS misses."""
  dists = space_lib.distributions(space_cfg)
  # Seeded by the ledger's size: reproducible, and a different stream for every new proposal.
  sampler = make_sampler(strategy, seed + len(ledger_trials), max_trials)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.simplefilter("ignore", UserWarning)
    study = _shadow(ledger_trials, dists, sampler)
    for _ in range(MAX_PROPOSALS):
      trial = study.ask()
      family = trial.suggest_categorical(space_lib.FAMILY_PARAM, dists[space_lib.FAMILY_PARAM].choices)
      fam = space_cfg.families[family]
      point = {f: trial.suggest_categorical(f"{family}.{f}", tuple(v)) for f, v in dict(fam.grid).items()}
      try:
        cand = space_lib.build(family, fam, point, num_labels)
      except Exception:  # a grid point no model can be built from
        cand = None
      if cand is not None and cand.hash in fitting and cand.hash not in taken:
        attrs = _sampler_attrs(study.get_trials(deepcopy=False)[trial.number].system_attrs)
        return fitting[cand.hash], attrs
      study.tell(trial, state=TrialState.FAIL)
  return None, {}
