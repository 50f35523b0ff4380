"""The multi-fidelity rules (asha.py) on plain numbers: bands, rank, promotion quotas, worker actions, plans."""

import math

import pytest

from embbert_jax import asha

R = asha.Record


def _plan(**kw) -> asha.Plan:
  base = dict(eta=3, rung_steps=(100, 300, 900), band_edges=(100_000, 500_000, 2_000_000), n0=18)
  base.update(kw)
  return asha.Plan(**base)


def test_band_edges_are_geometric_and_cover_the_range():
  edges = asha.band_edges(100_000, 1_600_000, 4)
  assert edges == (100_000, 200_000, 400_000, 800_000, 1_600_000)
  assert [asha.band_of(b, edges) for b in (100_000, 199_999, 200_000, 900_000, 1_600_000, 5)] == [
      0, 0, 1, 3, 3, 0]
  with pytest.raises(ValueError):
    asha.band_edges(2_000_000, 1_000_000, 2)


def test_expected_steps_weigh_each_rungs_steps_by_the_chance_of_reaching_it():
  assert _plan().expected_steps == pytest.approx(100 + 200 / 3 + 600 / 9)
  assert _plan(rung_steps=(307, 920)).expected_steps == pytest.approx(307 + 613 / 3)
  assert _plan(rung_steps=(920,)).expected_steps == 920


def test_band_count_follows_rung_zero_trials():
  assert [asha.band_count(n, 3) for n in (0, 8, 9, 18, 36, 100)] == [1, 1, 1, 2, 4, 4]


def test_rank_puts_a_dominating_newcomer_first_and_dominated_last():
  old = [R(0, 1, 500, 0.70), R(1, 1, 800, 0.75), R(2, 1, 300, 0.60)]
  newcomer = R(3, 1, 200, 0.90)  # smaller and better than every recorded entry
  ranked = asha.rank(old + [newcomer])
  assert ranked[0].trial == 3
  # 0.60 at 300 bytes is dominated only by the newcomer; 0.70 and 0.75 likewise: all in the second front.
  assert {r.trial for r in ranked[1:]} == {0, 1, 2}
  dominated = R(4, 1, 900, 0.50)  # bigger and worse than all
  assert asha.rank(old + [dominated])[-1].trial == 4


def test_rank_breaks_metric_ties_below_eps_towards_the_smaller_model():
  recs = [R(0, 1, 900, 0.801), R(1, 1, 300, 0.799), R(2, 1, 600, 0.60)]
  # Without eps the bigger model's 0.801 leads the front; with eps = 0.01 the two tie and the smaller wins.
  assert asha.rank(recs, eps=0.0)[0].trial == 0
  assert asha.rank(recs, eps=0.01)[0].trial == 1


def test_rank_tiebreak_and_failed_runs_last():
  recs = [R(0, 0, 500, 0.5, loss=0.69), R(1, 0, 500, 0.5, loss=0.60), R(2, 0, 500, math.nan, loss=math.nan)]
  assert [r.trial for r in asha.rank(recs, tiebreak=True)] == [1, 0, 2]
  assert asha.rank(recs)[-1].trial == 2


def test_promotable_waits_for_eta_results_then_keeps_the_quota():
  recs = [R(0, 0, 500, 0.2), R(1, 0, 500, 0.3)]
  assert asha.promotable(recs, eta=3) == []  # bootstrap: paused, not promoted and not killed
  recs.append(R(2, 0, 500, 0.9))
  assert [r.trial for r in asha.promotable(recs, eta=3)] == [2]
  recs[2] = R(2, 0, 500, 0.9, promoted=True)
  assert asha.promotable(recs, eta=3) == []  # floor(3/3) = 1 already used
  recs += [R(3, 0, 500, 0.1), R(4, 0, 500, 0.95), R(5, 0, 500, 0.4)]
  # n = 6: two slots, one used; the best unpromoted of the top 2 is trial 4.
  assert [r.trial for r in asha.promotable(recs, eta=3)] == [4]


def test_first_arrivals_are_paused_until_better_ones_come():
  plan = _plan(band_edges=(100_000, 2_000_000))
  worst = [R(i, 0, 1_000_000, 0.5, loss=1.0 - 0.01 * i) for i in range(2)]
  assert asha.next_action(plan, worst, started={0: 2}).kind == "start"  # nothing promoted yet
  recs = worst + [R(2, 0, 1_000_000, 0.5, loss=0.3)]
  act = asha.next_action(plan, recs, started={0: 3})
  assert (act.kind, act.trial, act.rung) == ("promote", 2, 1)  # the good late arrival, not the first ones


def test_small_models_are_never_eliminated_by_big_ones():
  plan = _plan()
  big = [R(i, 1, 1_500_000, 0.9) for i in range(3)]
  small = [R(10 + i, 1, 150_000, 0.6 + 0.01 * i) for i in range(3)]
  cands = {asha.next_action(plan, big + small, started={0: 9, 1: 9}).trial}
  recs = [R(r.trial, r.rung, r.bytes, r.metric, promoted=r.trial in cands) for r in big + small]
  cands.add(asha.next_action(plan, recs, started={0: 9, 1: 9}).trial)
  # One promotion per band: the small band promotes its own best even though every big model scores higher.
  assert cands == {0, 12}


def test_next_action_prefers_higher_rungs_and_never_promotes_twice():
  plan = _plan(band_edges=(100_000, 2_000_000), n0=100)
  recs = [R(i, 0, 300_000, 0.5, loss=1.0 - i / 10, promoted=i in (3, 4, 5)) for i in range(9)]
  recs += [R(i, 1, 300_000, 0.6 + i / 100) for i in (4, 5, 3)]
  act = asha.next_action(plan, recs, started={0: 9})
  assert (act.kind, act.rung, act.trial) == ("promote", 2, 5)
  taken = set()
  for _ in range(10):  # two workers alternating, each marking what it took (as the ledger does under a lock)
    act = asha.next_action(plan, recs, started={0: 9})
    if act.kind != "promote":
      break
    assert (act.trial, act.rung) not in taken
    taken.add((act.trial, act.rung))
    recs = [R(r.trial, r.rung, r.bytes, r.metric, r.loss,
              r.promoted or (r.trial == act.trial and r.rung == act.rung - 1)) for r in recs]
  # rung 1 holds 3 -> one promotion; rung 0 holds 9 -> three, already used by trials 3, 4 and 5.
  assert taken == {(5, 2)}


def test_ties_at_chance_are_decided_by_loss_not_arbitrarily():
  plan = _plan(band_edges=(100_000, 2_000_000))
  recs = [R(i, 0, 400_000, 0.0, loss=0.7 - 0.001 * (i % 7)) for i in range(20)]
  promoted = []
  for _ in range(6):
    act = asha.next_action(plan, recs, started={0: 20}, searching=False)
    assert act.kind == "promote"
    promoted.append(act.trial)
    recs = [R(r.trial, r.rung, r.bytes, r.metric, r.loss, r.promoted or r.trial == act.trial) for r in recs]
  assert asha.next_action(plan, recs, started={0: 20}, searching=False).kind == "done"
  best_losses = sorted(r.loss for r in recs)[:6]
  assert sorted(next(r.loss for r in recs if r.trial == t) for t in promoted) == best_losses


def test_search_ends_with_wait_then_done_and_close_out_fills_empty_bands():
  plan = _plan(n0=2)
  recs = [R(0, 0, 150_000, 0.6, loss=0.5), R(1, 1, 1_500_000, 0.7)]
  assert asha.next_action(plan, recs, started={0: 1, 1: 1}, running=1).kind == "wait"
  assert asha.next_action(plan, recs, started={0: 1, 1: 1}).kind == "done"
  assert [r.trial for r in asha.close_out(plan, recs)] == [0, 1]
  top = recs + [R(1, 2, 1_500_000, 0.71)]
  assert [r.trial for r in asha.close_out(plan, top)] == [0]
  assert [r.trial for r in asha.final_picks(plan, top)] == [1]
  # Every undominated top-rung trial of a band gets seeds (the band's best first), a dominated one none.
  one = _plan(band_edges=(100_000, 2_000_000))
  top = [R(0, 2, 150_000, 0.60), R(1, 2, 600_000, 0.65), R(2, 2, 900_000, 0.62), R(3, 2, 1_200_000, 0.70)]
  assert [r.trial for r in asha.final_picks(one, top, eps=0.1)] == [0, 3, 1]


def test_plan_fits_the_budget_and_says_what_it_dropped():
  costs = asha.Costs(step_s=0.25, compile_s=15, eval_s=3, setup_s=60)
  p = asha.plan(2700, costs, r_max=1350, smallest=190_000, budget=2_000_000)
  assert p.rung_steps == (150, 450, 1350) and p.dropped == ()
  assert costs.setup_s + p.est_search_s + p.est_final_s <= 2700 * 0.9
  assert p.n0 >= 9 * p.bands and p.final_seeds == 3
  assert asha.Plan.from_dict(p.to_dict()) == p
  tight = asha.plan(300, costs, r_max=1350, smallest=190_000, budget=2_000_000)
  assert tight.dropped and tight.dropped[0].startswith("final seeds")
  assert costs.setup_s + tight.est_search_s + tight.est_final_s <= 300
  assert asha.plan(2700, costs, r_max=1350, smallest=190_000, budget=2_000_000, max_trials=4).n0 <= 4
  two = asha.plan(2700, costs, r_max=1350, smallest=190_000, budget=2_000_000, workers=2)
  assert two.n0 > p.n0
  # Two extra seeds that train as one group cost one full run per band, not two: more search.
  grouped = asha.plan(2700, costs, r_max=1350, smallest=190_000, budget=2_000_000, seed_width=2)
  assert grouped.est_final_s == pytest.approx(p.est_final_s / 2) and grouped.n0 > p.n0
  # Too tight for the seeds: 3 -> 2 would save nothing when both extra seeds train as one group.
  tight_grouped = asha.plan(300, costs, r_max=1350, smallest=190_000, budget=2_000_000, seed_width=2)
  assert tight_grouped.dropped[0] == "final seeds 3 -> 1" and tight_grouped.final_seeds == 1
  with pytest.raises(asha.PlanError, match="took 0 s, and the 1 s left cannot train"):
    asha.plan(1, asha.Costs(step_s=10.0, compile_s=100.0), r_max=10, smallest=1, budget=2)
  with pytest.raises(asha.PlanError, match="took 70 s, all of it"):  # spent: setup and calibration
    asha.plan(60, asha.Costs(step_s=0.01, compile_s=1.0), r_max=10, smallest=1, budget=2, spent_s=70)
  # what was spent comes off the budget before the margin, as a budget of what was left
  left = asha.plan(2000, costs, r_max=1350, smallest=190_000, budget=2_000_000, spent_s=700)
  assert left == asha.plan(1300, costs, r_max=1350, smallest=190_000, budget=2_000_000)


def test_accuracy_eps_is_the_binomial_standard_error():
  assert asha.accuracy_eps(0.5, 100) == pytest.approx(0.05)
  assert asha.accuracy_eps(1.0, 100) == pytest.approx(0.001)


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("2h", 7200), ("90s", 90), ("1h30m", 5400),
                                           ("10min", 600), ("90", 90), ("0.5h", 1800)])
def test_parse_duration(text, seconds):
  assert asha.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0s", "-5m", "1e400h", "99999999999999999999h", "45x", "31d"])
def test_parse_duration_refuses_in_one_line(text):
  with pytest.raises(ValueError) as e:
    asha.parse_duration(text)
  assert "\n" not in str(e.value) and "time budget" in str(e.value)


@pytest.mark.parametrize("budget_s", [600, 1500, 2700, 2692, 5400, 7200, 20000])
def test_plan_fits_its_budget_and_fills_every_band(budget_s):
  """The search and final phases the plan estimates fit the budget less its margin, and every band gets
  the eta^2 rung-0 trials that fill its top rung (a planner that oscillated between band counts once
  kept the n0 of one count and the final phase of another: 58 estimated minutes in a 45-minute budget)."""
  c = asha.Costs(step_s=0.07, compile_s=1.7, eval_s=0.4, setup_s=8.6)
  p = asha.plan(budget_s, c, r_max=2650, smallest=187_100, budget=1_996_000, eta=3, rungs=3, final_seeds=3)
  assert p.est_search_s + p.est_final_s <= budget_s * 0.9 - c.setup_s + 1e-6
  assert p.n0 >= 3 ** (len(p.rung_steps) - 1) * p.bands


def test_tiebreak_rungs_do_not_apply_the_metric_noise_to_losses():
  """Rung 0 ranks on the metric with the loss breaking ties; the metric's eps (0.03 of MCC) must not make
  every early score a tie that goes to the smallest model (the first 45-minute sweep promoted its rung 0 by
  size)."""
  plan = _plan(band_edges=(100_000, 2_000_000), n0=100)
  recs = [R(0, 0, 187_000, 0.07, loss=0.6917), R(1, 0, 1_996_000, 0.12, loss=0.6857),
          R(2, 0, 613_000, 0.16, loss=0.6732)]
  act = asha.next_action(plan, recs, started={0: 3}, eps=0.03)
  assert (act.kind, act.trial, act.rung) == ("promote", 2, 1)
  [out] = asha.close_out(plan, recs, eps=0.03)
  assert out.trial == 2


def test_rung_zero_ranks_on_the_metric_and_the_loss_only_breaks_its_ties():
  """Band 2 of the 45-minute rt_polarity sweep of 2026-12-01 (the token table at 10x): ranked on the loss
  alone, rung 0 promoted trial 2 (MCC 0.501, the lowest loss, 1.996 MB) over trial 5 (MCC 0.578, 1.106 MB)."""
  plan = _plan(rung_steps=(883, 2650), band_edges=(906_900, 1_996_296), n0=100)
  recs = [R(2, 0, 1_996_296, 0.5008, loss=0.5419), R(5, 0, 1_105_672, 0.5780, loss=0.5537),
          R(8, 0, 1_486_344, 0.5377, loss=0.5749)]
  act = asha.next_action(plan, recs, started={0: 3}, eps=0.03)
  assert (act.kind, act.trial, act.rung) == ("promote", 5, 1)
  # equal metrics (at chance, say): the lower loss first, whatever the size
  tied = [R(0, 0, 1_000_000, 0.0, loss=0.69), R(1, 0, 1_500_000, 0.0, loss=0.60)]
  assert [r.trial for r in asha.rank(tied, tiebreak=True)] == [1, 0]


def test_a_plan_stored_under_the_old_field_name_keeps_its_tiebreak_rungs():
  """Ledgers written before the rename store `loss_rungs`; a one-rung plan saved with 0 must not come back
  with the default 1 (its only rung would then rank without eps)."""
  stored = {**_plan(rung_steps=(900,)).to_dict(), "loss_rungs": 0}
  del stored["tiebreak_rungs"]
  plan = asha.Plan.from_dict(stored)
  assert plan.tiebreak_rungs == 0 and not plan.tiebreak(0)
  assert _plan(rung_steps=(300, 900)).tiebreak(0) and not _plan(rung_steps=(300, 900)).tiebreak(1)


def test_auto_rungs_keeps_rung_zero_long_enough_to_rank():
  assert asha.auto_rungs(2650, 3) == (3, ())  # no floor: rung 0 at 294 steps
  # Two epochs of 265 steps: 3 rungs would put rung 0 at 294 steps (1.1 epochs), 2 rungs at 883.
  assert asha.auto_rungs(2650, 3, min_rung0_steps=530) == (
      2, ("not 3 rungs: rung 0 would train 294 steps, under 530",))
  n, why = asha.auto_rungs(920, 3, min_rung0_steps=400)  # 102, then 307 steps: both too short
  assert n == 1 and len(why) == 2 and why[1] == "not 2 rungs: rung 0 would train 307 steps, under 400"
  assert asha.auto_rungs(920, 3, max_rungs=1, min_rung0_steps=10_000) == (1, ())
