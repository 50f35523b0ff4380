"""The sweep's figure: validation metric against memory (log axis), frontier highlighted, budget line.

The paper's five EmbBERT points (spec section 5: GLUE score against fp32 memory) are drawn as labelled
reference markers on a secondary y axis: they are a different task and a different score, so they show
where the paper's models sit on the memory axis and how its accuracy curve bends, not a comparison of
numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embbert_jax.files import save_figure

# (name, total fp32 memory in bytes as the paper plots it, authors' GLUE score): spec section 5.
PAPER_POINTS = (("nano", 0.65e6, 55.3), ("tiny", 1.24e6, 57.1), ("EmbBERT", 1.95e6, 63.5),
                ("med", 9.6e6, 64.4), ("big", 39.7e6, 65.5))


def _mb(x: float) -> float:
  return x / 1e6


def frontier_figure(rows: list[dict[str, Any]], front: list[dict[str, Any]], path: str | Path, *,
                    budget: int | None = None, min_budget: int | None = None, policy: str = "fp32",
                    metric: str = "mcc", title: str = "", paper: bool = True,
                    references: list[tuple[str, float]] = ()) -> Path:
  """Writes the figure to `path` (format from its suffix) and returns the path. `references`: (name,
  validation metric) of baselines on the same split (baselines.py), drawn as horizontal lines."""
  import matplotlib
  matplotlib.use("Agg")  # files only; never needs a display
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8.5, 5.8), dpi=120)
  done = [r for r in rows if r["status"] == "complete" and r["value"] is not None]
  pruned = [r for r in rows if r["status"] == "pruned" and r["value"] is not None]
  if done:
    ax.scatter([_mb(r["memory_bytes"]) for r in done], [r["value"] for r in done], s=22, color="0.6",
               label=f"trials ({len(done)})", zorder=2)
  if pruned:
    rungs = any(r.get("rung") is not None for r in pruned)
    label = (f"lower rungs: not promoted ({len(pruned)}, last validation)" if rungs
             else f"stopped early ({len(pruned)}, last validation)")
    ax.scatter([_mb(r["memory_bytes"]) for r in pruned], [r["value"] for r in pruned], s=18, marker="x",
               color="0.8", alpha=0.6 if rungs else 1.0, label=label, zorder=2)
  if front:
    xs, ys = [_mb(r["memory_bytes"]) for r in front], [r["value"] for r in front]
    # The frontier as a staircase: at any memory, the best score reachable within it.
    ax.step(xs, ys, where="post", color="C3", lw=1.5, zorder=3)
    ax.scatter(xs, ys, s=46, color="C3", edgecolor="k", lw=0.6, zorder=4,
               label=f"Pareto frontier ({len(front)})")
    for r in front:
      ax.annotate(f"#{r['trial']}", (_mb(r["memory_bytes"]), r["value"]), textcoords="offset points",
                  xytext=(4, 4), fontsize=7, color="C3")
  for value, style, name in ((budget, "--", "budget"), (min_budget, ":", "min budget")):
    if value:
      ax.axvline(_mb(value), color="C0", ls=style, lw=1.2, label=f"{name} {_mb(value):g} MB")
  for i, (name, value) in enumerate(references):
    ax.axhline(value, color=f"C{4 + i}", ls="-.", lw=1.1, zorder=1,
               label=f"{name}: validation {metric} {value:.3f} (same split)")
  ax.set_xscale("log")
  # Plain MB numbers on the log axis (0.2, 0.5, 1, 2, ...), not powers of ten.
  from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
  ax.xaxis.set_major_locator(FixedLocator([m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5)]))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel(f"memory: weights + activations, {policy} (MB, log scale)")
  ax.set_ylabel(f"validation {metric} (this sweep)")
  ax.grid(True, which="both", alpha=0.25)
  handles, labels = ax.get_legend_handles_labels()
  if paper:
    ax2 = ax.twinx()
    px, py = [_mb(m) for _, m, _ in PAPER_POINTS], [s for _, _, s in PAPER_POINTS]
    ax2.plot(px, py, color="C2", ls=":", marker="D", ms=5, lw=1,
             label="paper's EmbBERT family: GLUE score (right axis; other task, fp32 memory)")
    for name, m, s in PAPER_POINTS:
      ax2.annotate(f"{name} {s:g}", (_mb(m), s), textcoords="offset points", xytext=(5, -10), fontsize=7,
                   color="C2")
    ax2.set_ylabel("paper: GLUE score (reference only)", color="C2")
    ax2.tick_params(axis="y", colors="C2")
    h2, l2 = ax2.get_legend_handles_labels()
    handles, labels = handles + h2, labels + l2
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, 0.4), max(hi, 60))  # keep the paper's points in view
  ax.set_title(title or "accuracy vs memory", fontsize=10)
  # Below the axes: inside, it would hide trials.
  fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
  fig.tight_layout(rect=(0, 0.12, 1, 1))
  path = save_figure(fig, path)
  plt.close(fig)
  return path
