"""What XLA makes of a group step: the optimized HLO of the vmapped and the mapped step, side by side.

    python benchmarks/group_hlo.py                                     # embbert, G=4, L=96, batch 32
    python benchmarks/group_hlo.py --preset nano --group 16 --impls vmap map
    python benchmarks/group_hlo.py --dump /tmp/hlo                     # also writes each program's HLO text

Builds the group step of `programs.programs_for` (as benchmarks/grouped_training.py does) for each
`group_impl`, on abstract inputs (no data, no parameters), and only lowers and compiles it: nothing runs.
From the compiled module's text it counts, per variant, the top-level instructions (what the CPU runtime
executes one by one, each counted as often as it runs: a `lax.map` body G times) by opcode and fusion
kind, with the bytes they write; the pure data-movement ones (copy, transpose, slices, pads, concats and
fusions of nothing else); every dot with its shapes, layouts and batch dimensions, and whether YNNPACK
runs it (a `__ynn_fusion`) or XLA's own dot emitter (a top-level `dot`); and XLA's cost analysis, which
counts a while body once, so the map variant's figures there are not comparable to vmap's.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp

from embbert_jax import models, programs, train

BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
         "s64": 8, "u64": 8, "f64": 8, "c64": 8}
SHAPE = re.compile(r"\b(pred|[su](?:8|16|32|64)|bf16|f(?:16|32|64)|c64)\[([\d,]*)\](\{[\d,]*\})?")
HEADER = re.compile(r"^(ENTRY\s+)?%(\S+)\s*\(.*\{\s*$")
INSTR = re.compile(r"^\s*(ROOT\s+)?%(\S+)\s*=\s*(.+?)\s+([a-z][\w-]*)\((.*)$")
MOVES = {"copy", "transpose", "slice", "dynamic-slice", "dynamic-update-slice", "pad", "concatenate",
         "reverse", "gather", "scatter"}
SKIP = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}  # top level: nothing to run
FREE = SKIP | {"reshape", "broadcast", "iota"}  # in a fusion: no data moved of their own
HEAVY = ("dot", "convolution", "transpose", "copy", "dynamic-slice", "dynamic-update-slice", "gather",
         "scatter", "while", "custom-call")


def nbytes(type_str: str) -> int:
  """Bytes of a shape (the sum over a tuple's elements)."""
  return sum(BYTES[d] * math.prod(int(x) for x in dims.split(",") if x) for d, dims, _ in SHAPE.findall(type_str))


def parse(text: str) -> tuple[dict, str]:
  """{computation: [instruction dicts]} and the entry's name, from an HLO module's text."""
  comps, entry, cur = {}, "", None
  for line in text.splitlines():
    if cur is None:
      m = HEADER.match(line)
      if m:
        cur = m.group(2)
        comps[cur] = []
        entry = cur if m.group(1) else entry
      continue
    if line.startswith("}"):
      cur = None
      continue
    m = INSTR.match(line)
    if m:
      rest, depth, i = m.group(5), 1, 0
      while i < len(rest) and depth:
        depth += {"(": 1, ")": -1}.get(rest[i], 0)
        i += 1
      comps[cur].append({"name": m.group(2), "type": m.group(3), "op": m.group(4),
                         "args": re.findall(r"%([\w.\-]+)", rest[:i - 1]), "attrs": rest[i:]})
  return comps, entry


def attr(attrs: str, key: str) -> str:
  """An attribute's value: `key={0,1}` -> "0,1", `key=%name` -> "name"."""
  m = re.search(r"\b" + key + r"=(?:\{([^}]*)\}|%?([^,\s}]*))", attrs)
  return (m.group(1) if m.group(1) is not None else m.group(2)) if m else ""


def walk(comps: dict, entry: str) -> tuple[dict, dict, dict]:
  """(runs per call of the program of each computation, which ones are scheduled (top level: the entry,
  while bodies and conditions, calls), the fusion kind of each fused computation: 'ynn' for YNNPACK's)."""
  runs, scheduled, kind = collections.Counter(), set(), {}

  def visit(name: str, n: int, top: bool) -> None:
    runs[name] += n
    if top:
      scheduled.add(name)
    for ins in comps[name]:
      a = ins["attrs"]
      if ins["op"] == "while":
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', a)
        trips = int(trips.group(1)) if trips else 1
        visit(attr(a, "body"), n * trips, top)
        visit(attr(a, "condition"), n * (trips + 1), top)
      elif ins["op"] == "fusion":
        kind[attr(a, "calls")] = "ynn" if "__ynn_fusion" in a else attr(a, "kind")
        visit(attr(a, "calls"), n, False)
      elif ins["op"] in ("call", "conditional"):
        for callee in re.findall(r"(?:to_apply|branch_computations|calls)=\{?([^}]*)", a):
          for c in re.findall(r"%([\w.\-]+)", callee):
            visit(c, n, top)
  visit(entry, 1, True)
  return runs, scheduled, kind


def fused_instrs(comps: dict, name: str) -> list[dict]:
  """The instructions of a fused computation, nested fusions included."""
  out = []
  for ins in comps[name]:
    out.append(ins)
    if ins["op"] == "fusion":
      out += fused_instrs(comps, attr(ins["attrs"], "calls"))
  return out


def analyse(text: str) -> dict:
  """Per-step counts of an optimized HLO module: top-level instructions by category ([static, runs, bytes
  written]), heavy ops inside fusions, pure data movement, dots by signature and bytes written by output size."""
  comps, entry = parse(text)
  runs, scheduled, kind = walk(comps, entry)
  types = {ins["name"]: ins["type"] for c in comps.values() for ins in c}
  rows = collections.defaultdict(lambda: [0, 0, 0])  # category -> [static, runs, bytes written]
  inside = collections.Counter()  # heavy ops inside fusions, times runs
  moves = [0, 0]  # pure data-movement instructions: runs, bytes
  sizes = collections.Counter()  # output bytes of a top-level instruction -> bytes written per step
  for cname in scheduled:
    n = runs[cname]
    for ins in comps[cname]:
      op, size = ins["op"], nbytes(ins["type"])
      if op in SKIP:
        continue
      if op in ("while", "call", "conditional"):
        size = 0  # its output aliases what its body wrote (counted there)
      if op == "fusion":
        callee = attr(ins["attrs"], "calls")
        instrs = fused_instrs(comps, callee)
        body = collections.Counter(u["op"] for u in instrs)
        if body["dynamic-update-slice"]:  # updated in place: only the update is written
          size = sum(nbytes(types[u["args"][1]]) for u in instrs if u["op"] == "dynamic-update-slice")
        cat = f"fusion {kind[callee]}" + (" (dot)" if body["dot"] else "")
        inside.update({k: v * n for k, v in body.items() if k in HEAVY})
        pure = all(k in MOVES or k in FREE for k in body)
      else:
        cat, pure = op, op in MOVES
      r = rows[cat]
      r[0], r[1], r[2] = r[0] + 1, r[1] + n, r[2] + n * size
      sizes[size] += n * size
      if pure:
        moves[0] += n
        moves[1] += n * size
  dots = collections.defaultdict(lambda: [0, 0.0, ""])  # signature -> [runs, flops, an op_name]
  for cname, instrs in comps.items():
    where = ("xla" if cname in scheduled else kind.get(cname, "?"))
    for ins in instrs:
      if ins["op"] != "dot" or not runs[cname]:
        continue
      a = ins["attrs"]
      lhs, rhs = (types.get(x, "?") for x in ins["args"][:2])
      dims = " ".join(f"{k}={attr(a, k)}" for k in ("lhs_batch_dims", "lhs_contracting_dims", "rhs_batch_dims",
                                                    "rhs_contracting_dims") if attr(a, k))
      lhs_dims = [int(x) for x in SHAPE.search(lhs).group(2).split(",") if x]
      contract = math.prod(lhs_dims[int(i)] for i in attr(a, "lhs_contracting_dims").split(",") if i)
      out = math.prod(int(x) for x in SHAPE.search(ins["type"]).group(2).split(",") if x)
      op_name = re.search(r'op_name="([^"]*)"', a)
      sig = (where, lhs, rhs, ins["type"], dims)
      d = dots[sig]
      d[0] += runs[cname]
      d[1] += runs[cname] * 2.0 * out * contract
      d[2] = d[2] or (op_name.group(1).split("/", 1)[-1] if op_name else "")
  return {"rows": dict(rows), "inside": inside, "moves": moves, "dots": dict(dots), "sizes": sizes}


def build(preset: str, group: int, seq_len: int, batch: int, impl: str):
  """The compiled group step of `preset` for G members and (G, batch, seq_len) batches, under `impl`."""
  cfg = train.get_config(preset)
  cfg.group_impl, cfg.batch_size = impl, batch
  progs = programs.programs_for(cfg)
  seeds, ones = jax.ShapeDtypeStruct((group,), jnp.int32), jax.ShapeDtypeStruct((group,), jnp.float32)
  params = jax.eval_shape(jax.vmap(lambda s: models.init_params(cfg.model, jax.random.key(s))), seeds)
  state = jax.eval_shape(progs.init, seeds, ones, ones, params, {})
  batch_G = {"ids": jax.ShapeDtypeStruct((group, batch, seq_len), jnp.int32),
             "labels": jax.ShapeDtypeStruct((group, batch), jnp.int32)}
  compiled = progs.step.lower(state, batch_G).compile()
  programs.release_programs()
  return compiled


def mb(n: float) -> str:
  return f"{n / 1e6:,.1f}"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="embbert")
  ap.add_argument("--group", type=int, default=4, help="members G")
  ap.add_argument("--seq-len", type=int, default=96)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--impls", nargs="+", default=["vmap", "map"], help="programs.over_members lowerings")
  ap.add_argument("--dump", default="", help="a folder to write each variant's optimized HLO text to")
  args = ap.parse_args()
  stats, costs = {}, {}
  for impl in args.impls:
    compiled = build(args.preset, args.group, args.seq_len, args.batch, impl)
    text = compiled.as_text()
    if args.dump:
      Path(args.dump).mkdir(parents=True, exist_ok=True)
      Path(args.dump, f"{args.preset}_G{args.group}_L{args.seq_len}_B{args.batch}_{impl}.hlo").write_text(text)
    stats[impl] = analyse(text)
    stats[impl]["memory"] = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    costs[impl] = cost[0] if isinstance(cost, list) else cost
  print(f"{args.preset}, G={args.group}, batch {args.batch}, length {args.seq_len}, {jax.devices()[0].platform}, "
        f"jax {jax.__version__}\n")
  report(stats, costs)


def report(stats: dict, costs: dict) -> None:
  """Markdown tables of `analyse`'s figures and the cost analyses, one column per variant."""
  impls = list(stats)
  print("Top-level instructions (static count / executed per step / MB written per step):\n")
  print("| instruction | " + " | ".join(impls) + " |")
  print("|---|" + "---|" * len(impls))
  cats = sorted({c for s in stats.values() for c in s["rows"]},
                key=lambda c: -max(s["rows"].get(c, [0, 0, 0])[2] for s in stats.values()))
  for c in cats:
    cells = [s["rows"].get(c, [0, 0, 0]) for s in stats.values()]
    print(f"| {c} | " + " | ".join(f"{r[0]} / {r[1]} / {mb(r[2])}" for r in cells) + " |")
  total = lambda s, i: sum(r[i] for r in s["rows"].values())
  print("| all | " + " | ".join(f"{total(s, 0)} / {total(s, 1)} / {mb(total(s, 2))}" for s in stats.values())
        + " |")
  print("| pure data movement | " + " | ".join(f"- / {s['moves'][0]} / {mb(s['moves'][1])}" for s in stats.values())
        + " |")
  print("\nBytes written per step by top-level instructions, by the size of their output (the working set "
        "an instruction streams through):\n")
  print("| output size | " + " | ".join(f"{i} MB" for i in impls) + " |")
  print("|---|" + "---|" * len(impls))
  for lo, hi in ((0, 2**20), (2**20, 2**22), (2**22, 2**24), (2**24, math.inf)):
    label = f"{lo / 2**20:g}-{hi / 2**20:g} MiB" if hi < math.inf else f">= {lo / 2**20:g} MiB"
    print(f"| {label} | " + " | ".join(mb(sum(b for size, b in s["sizes"].items() if lo <= size < hi))
                                      for s in stats.values()) + " |")
  print("| largest output | " + " | ".join(mb(max(s["sizes"])) for s in stats.values()) + " |")
  if all(s.get("memory") is not None for s in stats.values()):
    print("| temp buffers (memory_analysis) | "
          + " | ".join(mb(s["memory"].temp_size_in_bytes) for s in stats.values()) + " |")
  print("\nOps inside fusions (executed per step):\n")
  print("| op | " + " | ".join(impls) + " |")
  print("|---|" + "---|" * len(impls))
  for op in HEAVY:
    if any(s["inside"].get(op) for s in stats.values()):
      print(f"| {op} | " + " | ".join(str(s["inside"].get(op, 0)) for s in stats.values()) + " |")
  print("\nDots by backend (ynn: YNNPACK fusion; xla: a top-level dot, XLA:CPU's own dot emitter):\n")
  print("| backend | " + " | ".join(f"{i} dots run | {i} GFLOP" for i in impls) + " |")
  print("|---|" + "---|---|" * len(impls))
  for where in sorted({k[0] for s in stats.values() for k in s["dots"]}):
    cells = []
    for s in stats.values():
      sel = [v for k, v in s["dots"].items() if k[0] == where]
      cells.append(f"{sum(v[0] for v in sel)} | {sum(v[1] for v in sel) / 1e9:.2f}")
    print(f"| {where} | " + " | ".join(cells) + " |")
  for impl, s in stats.items():
    print(f"\nDots of {impl} (per step):\n")
    print("| backend | lhs | rhs | out | dims | runs | GFLOP | e.g. |")
    print("|---|---|---|---|---|---|---|---|")
    for (where, lhs, rhs, out, dims), (n, flops, name) in sorted(s["dots"].items(), key=lambda kv: -kv[1][1]):
      print(f"| {where} | {lhs} | {rhs} | {out} | {dims} | {n} | {flops / 1e9:.3f} | {name[-70:]} |")
  print("\nXLA cost analysis (a while body counted once):\n")
  print("| | " + " | ".join(impls) + " |")
  print("|---|" + "---|" * len(impls))
  for key in ("flops", "bytes accessed", "transcendentals"):
    print(f"| {key} | " + " | ".join(f"{c.get(key, 0.0) / 1e9:.3f} G" for c in costs.values()) + " |")


if __name__ == "__main__":
  main()
