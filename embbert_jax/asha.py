"""Asynchronous successive halving for two objectives: the rules of the multi-fidelity sweep, as pure code.

The sweep's objectives are (validation metric: maximise, memory: minimise). Memory is exact and known before
training, so only the metric is noisy, and a small model must never be eliminated by a big one. Hence
(../shared/design/search.md, A1-A4):

* **Bands.** log(memory) between the smallest fitting config and the budget is cut into B equal bands; every
  promotion decision is taken inside one band, so each band fills its own top rung.
* **Rank** inside (band, rung): non-dominated front on (metric, memory), then metric, then smaller memory.
  Metric gaps below the noise level `eps` are ties (soft ranking), and a tie goes to the smaller model.
  Lower rungs rank on the metric with the validation loss breaking its ties (from scratch, accuracy can
  sit at chance for hundreds of steps, and the loss still orders those trials), and without `eps` (early
  losses differ by less than the metric's eps, which made rung 0 promote by size). They ranked on the loss
  alone until the scratch recipe's 10x token table: its models fit fast, their loss rises while their
  accuracy holds, and a 45-minute rt_polarity sweep promoted a 1.996 MB config of validation MCC 0.501
  over a 1.106 MB one of 0.578 in the same band (README, The sweep).
* **Promotion, not stopping** (ASHA): a trial that reaches rung k is paused. A (band, rung) that holds n
  results may have promoted floor(n / eta) of them, the best ones by rank; until it holds eta results
  nothing leaves it (paused trials wait rather than being killed, which removes the first-arrival bias of
  stopping-type schedulers). A free worker takes the highest promotion available, else starts a new trial.
* **Time.** `plan` sizes the rungs and the number of trials from measured rates so that search, the final
  seeds and a margin fit the wall-clock budget, and says what it had to drop.

Nothing here touches Optuna or JAX: the engine feeds these functions records read from the ledger under its
lock, and acts on what they return. That keeps every rule testable with plain numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Record:
  """What one trial has reported at one rung (a trial appears once per rung it finished)."""

  trial: int
  rung: int
  bytes: int
  metric: float  # validation metric at the rung, higher is better (NaN for a failed run)
  loss: float = math.nan  # validation loss at the rung, lower is better
  promoted: bool = False  # whether the trial has already been promoted out of this rung


@dataclasses.dataclass(frozen=True)
class Plan:
  """A sweep's rung schedule, written once to the ledger and only read afterwards.

  `rung_steps[k]` is the number of optimizer steps a trial has trained when it reports rung k (cumulative;
  the last is R_max, the convergence budget). `band_edges` are B + 1 increasing byte counts. `n0` trials
  start at rung 0; the best `final_per_band` of each band's top rung are trained with `final_seeds` seeds
  in all (the promoted run counts as the first).
  """

  eta: int
  rung_steps: tuple[int, ...]
  band_edges: tuple[int, ...]
  n0: int
  final_per_band: int = 1
  final_seeds: int = 3
  tiebreak_rungs: int = 1  # rungs below this index rank on the metric, ties by validation loss, no eps
  est_search_s: float = 0.0
  est_final_s: float = 0.0
  dropped: tuple[str, ...] = ()

  @property
  def top(self) -> int:
    return len(self.rung_steps) - 1

  @property
  def bands(self) -> int:
    return len(self.band_edges) - 1

  @property
  def expected_steps(self) -> float:
    """The steps a trial started at rung 0 trains on average: each rung's further steps times the chance
    of being promoted that far (1 / eta per rung)."""
    steps = self.rung_steps
    return steps[0] + sum((steps[k] - steps[k - 1]) / self.eta ** k for k in range(1, len(steps)))

  def band(self, nbytes: int) -> int:
    return band_of(nbytes, self.band_edges)

  def tiebreak(self, rung: int) -> bool:
    """Whether `rung` ranks on the metric with the loss breaking ties and no eps (the rungs too short
    for the metric's noise to mean much), rather than on the metric within eps."""
    return rung < self.tiebreak_rungs

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "Plan":
    fields = {f.name for f in dataclasses.fields(cls)}
    if "loss_rungs" in d:  # the field's name in ledgers written before 2026-12-02
      d = {**d, "tiebreak_rungs": d["loss_rungs"]}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


def band_count(n0: int, eta: int, max_bands: int = 4) -> int:
  """B = clamp(floor(n0 / eta^2), 1, max_bands): each band gets enough rung-0 trials to fill its top rung."""
  return max(1, min(max_bands, n0 // (eta * eta)))


def band_edges(smallest: int, budget: int, bands: int) -> tuple[int, ...]:
  """B + 1 byte counts cutting [smallest, budget] into bands of equal width in log(memory)."""
  if smallest <= 0 or budget < smallest:
    raise ValueError(f"band edges need 0 < smallest <= budget, got {smallest} and {budget}")
  lo, hi = math.log(smallest), math.log(budget)
  inner = [int(round(math.exp(lo + (hi - lo) * i / bands))) for i in range(1, bands)]
  return (smallest, *inner, budget)


def band_of(nbytes: int, edges: Sequence[int]) -> int:
  """The band holding `nbytes` (values outside the edges go to the first or last band)."""
  for b in range(len(edges) - 2, 0, -1):
    if nbytes >= edges[b]:
      return b
  return 0


# On the lower rungs: score = metric - LOSS_TIEBREAK x loss. The loss orders equal metrics (trials at chance);
# a metric gap of one validation example's MCC (~0.002 on 1,000 examples) outweighs any loss gap under 2.
LOSS_TIEBREAK = 1e-3


def _score(r: Record, tiebreak: bool) -> float:
  value = r.metric - LOSS_TIEBREAK * r.loss if tiebreak else r.metric
  return -math.inf if math.isnan(value) else value


def _dominates(a: tuple[float, int], b: tuple[float, int], eps: float) -> bool:
  """(score, bytes) a dominates b: no bigger, and clearly better, or tied within eps and strictly smaller."""
  return a[1] <= b[1] and (a[0] > b[0] + eps or (a[0] >= b[0] - eps and a[1] < b[1]))


def rank(records: Sequence[Record], eps: float = 0.0, tiebreak: bool = False) -> list[Record]:
  """Records best first: non-dominated fronts on (score, memory), then score, then smaller memory.

  Scores within `eps` of each other are ties, and a tie goes to the smaller model: inside a front the next
  pick is the smallest model among those within eps of the best remaining score. Failed runs (NaN) come
  last. O(n^2), for the tens of records of one (band, rung). Deterministic: full ties keep trial order.
  """
  keyed = [(_score(r, tiebreak), r.bytes) for r in records]
  remaining = [i for i, (s, _) in enumerate(keyed) if math.isfinite(s)]
  failed = [i for i, (s, _) in enumerate(keyed) if not math.isfinite(s)]
  ordered: list[int] = []
  while remaining:
    front = [i for i in remaining if not any(_dominates(keyed[j], keyed[i], eps) for j in remaining)]
    while front:
      best = max(keyed[i][0] for i in front)
      pick = min((i for i in front if keyed[i][0] >= best - eps),
                 key=lambda i: (keyed[i][1], -keyed[i][0], records[i].trial))
      ordered.append(pick)
      front.remove(pick)
      remaining.remove(pick)
  return [records[i] for i in ordered + sorted(failed, key=lambda i: records[i].trial)]


def promotable(records: Sequence[Record], eta: int, eps: float = 0.0, tiebreak: bool = False) -> list[Record]:
  """Which records of one (band, rung) may be promoted now, best first.

  floor(n / eta) of the n records may have left the rung in all; those already promoted count against it.
  A candidate must be inside the top floor(n / eta) by rank (a late strong arrival can still take a slot
  its predecessors did not use, but never more slots than the quota).
  """
  n = len(records)
  if n < eta:
    return []
  quota = n // eta - sum(r.promoted for r in records)
  if quota <= 0:
    return []
  top = rank(records, eps, tiebreak)[:n // eta]
  return [r for r in top if not r.promoted and math.isfinite(_score(r, tiebreak))][:quota]


@dataclasses.dataclass(frozen=True)
class Action:
  """What a free worker should do next: promote `trial` to `rung`, start a new trial in `band`, or wait."""

  kind: str  # "promote" | "start" | "wait"
  trial: int | None = None
  rung: int | None = None
  band: int | None = None


def next_action(plan: Plan, records: Iterable[Record], started: dict[int, int] | None = None,
                running: int = 0, eps: float = 0.0, searching: bool = True) -> Action:
  """The ASHA decision for one free worker, from every rung record in the ledger.

  Rungs are scanned from the top down (finishing a promising trial beats starting a new one). `started`
  counts rung-0 trials per band (running ones included); while `searching`, a new trial goes to the band
  with the fewest, until `plan.n0` are started. After that the worker waits if others still run (their
  results may unlock promotions), and when nothing runs the sweep's search phase is over (`close_out`).
  """
  by_cell: dict[tuple[int, int], list[Record]] = {}
  for r in records:
    by_cell.setdefault((plan.band(r.bytes), r.rung), []).append(r)
  for rung in range(plan.top - 1, -1, -1):
    best: Record | None = None
    for band in range(plan.bands):
      tiebreak = plan.tiebreak(rung)
      cands = promotable(by_cell.get((band, rung), []), plan.eta, 0.0 if tiebreak else eps, tiebreak)
      if cands and (best is None or _score(cands[0], tiebreak) > _score(best, tiebreak)):
        best = cands[0]
    if best is not None:
      return Action("promote", trial=best.trial, rung=rung + 1, band=plan.band(best.bytes))
  started = started or {}
  if searching and sum(started.values()) < plan.n0:
    return Action("start", band=start_band(plan, started))
  return Action("wait") if running else Action("done")


def start_band(plan: Plan, started: dict[int, int]) -> int:
  """The band a new trial starts in: the one with the fewest started (the lowest of those)."""
  return min(range(plan.bands), key=lambda b: (started.get(b, 0), b))


def close_out(plan: Plan, records: Iterable[Record], eps: float = 0.0) -> list[Record]:
  """When the search phase ends: for each band whose top rung is empty, its best paused trial.

  These go straight to the top rung so that every band that holds any result is represented on the final
  frontier (a band with few trials could otherwise never reach eta results at a rung).
  """
  records = list(records)
  out = []
  for band in range(plan.bands):
    mine = [r for r in records if plan.band(r.bytes) == band]
    if not mine or any(r.rung == plan.top for r in mine):
      continue
    high = max(r.rung for r in mine)
    paused = [r for r in mine if r.rung == high and not r.promoted]
    tiebreak = plan.tiebreak(high)
    ranked = rank(paused, 0.0 if tiebreak else eps, tiebreak)
    if ranked and math.isfinite(_score(ranked[0], tiebreak)):
      out.append(ranked[0])
  return out


def final_picks(plan: Plan, records: Iterable[Record], eps: float = 0.0) -> list[Record]:
  """The trials of the top rung that get the final seeds, best first: in each band, the best
  `final_per_band` by rank, and every other top-rung trial that no other one of its band dominates
  (exactly, without eps). Those can all be frontier points, and a frontier that mixes seed means with
  single runs favours the lucky single runs (measured: the tweets sweep's seeded config fell from 0.492
  to a 0.441 mean while its unseeded neighbours kept their first draw)."""
  top = [r for r in records if r.rung == plan.top and math.isfinite(r.metric)]
  firsts, rest = [], []
  for band in range(plan.bands):
    mine = [r for r in top if plan.band(r.bytes) == band]
    ranked = rank(mine, eps)
    firsts.extend(ranked[:plan.final_per_band])
    rest.extend(r for r in ranked[plan.final_per_band:]
                if not any(_dominates((o.metric, o.bytes), (r.metric, r.bytes), 0.0) for o in mine))
  return firsts + sorted(rest, key=lambda r: -r.metric)


def accuracy_eps(accuracy: float, n_validation: int) -> float:
  """The binomial standard error of a validation accuracy: below it, two trials are a tie."""
  p = min(max(accuracy, 0.0), 1.0)
  return math.sqrt(max(p * (1.0 - p), 1e-4) / max(n_validation, 1))


# ------------------------------------------------------------------------------------------- time planning

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(min|sec|d|h|m|s)?", re.IGNORECASE)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1, None: 1}
MAX_DURATION_S = 30 * 86400
DURATION_FORMS = "e.g. 90s, 45m, 2h, 1h30m (a bare number is seconds)"


def parse_duration(text: str) -> float:
  """Seconds in a wall-clock budget such as '45m', '2h', '90s' or '1h30m'; ValueError in one line."""
  s = str(text).strip().lower().replace(" ", "")
  pos, total = 0, 0.0
  while pos < len(s):
    m = _DURATION_PART.match(s, pos)
    if not m or m.end() == pos or len(m.group(1)) > 12:
      raise ValueError(f"cannot read the time budget {text!r}: {DURATION_FORMS}")
    total += float(m.group(1)) * _SECONDS[m.group(2)]
    pos = m.end()
  if not s or not 0 < total <= MAX_DURATION_S:
    raise ValueError(f"the time budget {text!r} must be more than 0 s and at most 30 days ({DURATION_FORMS})")
  return total



@dataclasses.dataclass(frozen=True)
class Costs:
  """Measured rates that the planner turns into a schedule (seconds)."""

  step_s: float  # one optimizer step of a typical fitting config
  compile_s: float  # tracing, lowering and compiling (or loading) a new trial's programs
  eval_s: float = 0.0  # one validation pass
  setup_s: float = 0.0  # data, tokenizer, plan: paid once
  promoted_step_factor: float = 1.5  # promoted configs are bigger than the average: their step costs more


def rung_schedule(r_max: int, eta: int, rungs: int) -> tuple[int, ...]:
  """Cumulative steps per rung, geometric with ratio eta and ending at r_max."""
  return tuple(max(1, int(round(r_max / eta ** (rungs - 1 - k)))) for k in range(rungs))


def auto_rungs(r_max: int, eta: int, *, max_rungs: int = 3, min_rung0_steps: int = 0) -> tuple[int, tuple[str, ...]]:
  """The most rungs (up to max_rungs) whose rung 0 trains at least `min_rung0_steps`, and why each one above
  was refused. The scheduler asks for 1 epoch (scheduler.MIN_RUNG0_EPOCHS). It asked for 2 while the
  recipe ran 10 epochs and models started from token vectors alone: then, after 1.1 epochs (the end of
  the warmup) 46 of 81 rung-0 configs on the amazon task still predicted one class, so promotion ranked on
  noise; at 3.3 epochs none did. With the label readout every config starts as the linear model, and the
  4-epoch recipe's warmup ends at 0.4 epochs.

  Compile time is deliberately not a criterion: every config pays its compile whatever the rung count, so
  fewer rungs only spread it over fewer, longer trials. A rule that also refused a rung 0 shorter than a
  compile picked one rung on amazon (15 configs in 20 minutes, best seed mean 67.2 %, where two rungs had
  found 72.8 %)."""
  why: list[str] = []
  for n in range(max(1, max_rungs), 1, -1):
    r0 = rung_schedule(r_max, eta, n)[0]
    if r0 >= min_rung0_steps:
      return n, tuple(why)
    why.append(f"not {n} rungs: rung 0 would train {r0} steps, under {min_rung0_steps}")
  return 1, tuple(why)


def search_cost_per_trial(steps: Sequence[int], eta: int, costs: Costs) -> float:
  """Expected seconds one started trial costs the search phase (a 1/eta^k share of rung k's extra steps)."""
  total = costs.compile_s + steps[0] * costs.step_s + costs.eval_s
  for k in range(1, len(steps)):
    extra = (steps[k] - steps[k - 1]) * costs.step_s * costs.promoted_step_factor + costs.eval_s
    total += extra / eta ** k
  return total


def seed_runs(final_seeds: int, width: int) -> int:
  """Full runs, one after another, that train a pick's final_seeds - 1 extra seeds in groups of `width`."""
  return -(-max(0, final_seeds - 1) // max(1, width))


class PlanError(ValueError):
  """A time budget too short to plan a sweep in: the user's input (the sweep prints it as one line)."""


def plan(time_budget_s: float, costs: Costs, *, r_max: int, smallest: int, budget: int, eta: int = 3,
         rungs: int = 3, final_seeds: int = 3, max_bands: int = 4, margin: float = 0.1, workers: int = 1,
         seed_width: int = 1, max_trials: int | None = None, spent_s: float = 0.0) -> Plan:
  """A schedule that fits what `spent_s` (setup and calibration) left of `time_budget_s`: rungs up to r_max,
  n0 rung-0 trials, B bands, the final seeds; PlanError when nothing fits.

  The worker-seconds left after setup and a safety margin are split between the final phase (the pick of
  each band trained with final_seeds - 1 more seeds, compiles included, in full runs of up to `seed_width`
  seeds each: the trainer's group size) and the search phase. When the
  budget cannot give every band a full top rung, the planner gives things up in this order, each noted in
  `dropped`: final seeds (down to 1), rungs (down to one), then r_max itself (halved). `max_trials` caps n0.
  """
  left = time_budget_s - spent_s
  too_short = (f"the time budget ({time_budget_s:.0f} s) is too short for this task: setup and calibration "
               f"took {spent_s:.0f} s")
  if left <= 0:
    raise PlanError(f"{too_short}, all of it; give it minutes")
  dropped: list[str] = []
  avail = (left * (1.0 - margin) - costs.setup_s) * max(1, workers)
  seeds, n_rungs, top_steps = final_seeds, rungs, r_max
  while True:
    steps = rung_schedule(top_steps, eta, n_rungs)
    full_run = costs.compile_s + top_steps * costs.step_s * costs.promoted_step_factor + costs.eval_s * n_rungs
    per_trial = search_cost_per_trial(steps, eta, costs)
    # B needs n0 >= eta^2 B rung-0 trials, and each band's final seeds eat into n0: the most bands whose
    # own final phase still leaves them enough trials (iterating B down: a fixed point may not exist).
    for bands in range(max_bands, 0, -1):
      final_s = bands * seed_runs(seeds, seed_width) * full_run
      n0 = max(0, int((avail - final_s) // per_trial))
      if max_trials is not None:
        n0 = min(n0, max_trials)
      if band_count(n0, eta, max_bands) >= bands:
        break
    if n0 >= max(1, eta ** (n_rungs - 1)) * bands:
      break
    if seeds > 1:  # to the most seeds that save a run (grouped seeds cost one run per group)
      fewer = seeds - 1
      while fewer > 1 and seed_runs(fewer, seed_width) == seed_runs(seeds, seed_width):
        fewer -= 1
      dropped.append(f"final seeds {seeds} -> {fewer}")
      seeds = fewer
    elif n_rungs > 1:
      dropped.append(f"rungs {n_rungs} -> {n_rungs - 1}")
      n_rungs -= 1
    elif top_steps > 1:
      dropped.append(f"r_max {top_steps} -> {top_steps // 2} steps")
      top_steps //= 2
    else:
      raise PlanError(f"{too_short}, and the {left:.0f} s left cannot train one step of one trial (a trial "
                      f"costs about {per_trial:.0f} s); give it minutes")
  return Plan(eta=eta, rung_steps=steps, band_edges=band_edges(smallest, budget, bands), n0=n0,
              final_seeds=seeds, tiebreak_rungs=1 if n_rungs > 1 else 0,
              est_search_s=n0 * per_trial / max(1, workers), est_final_s=final_s / max(1, workers),
              dropped=tuple(dropped))
