"""How fast the sweep prices its search space: configs per CPU second of `space.enumerate_space`.

    python benchmarks/space_enumeration.py --space default --rounds 5

Every round enumerates the whole space with a cold memory cache (`memory.policy_bytes` computes each
config's weight / activation / total bytes under every policy, as the budget filter needs them). CPU time
(time.process_time), not wall time, so other jobs on the machine do not count; median and best of the
rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

from embbert_jax import memory, space


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--space", default="default")
  ap.add_argument("--rounds", type=int, default=5)
  args = ap.parse_args()
  sp = space.load(args.space)
  rates = []
  for _ in range(args.rounds):
    memory._tally.cache_clear()  # cold: every config priced from its shapes
    t0 = time.process_time()
    cands = space.enumerate_space(sp)
    rates.append(len(cands) / (time.process_time() - t0))
  print(f"space {sp.name}: {len(cands)} configs; configs per CPU second: median {statistics.median(rates):,.0f}, "
        f"best {max(rates):,.0f} ({args.rounds} rounds)")


if __name__ == "__main__":
  main()
