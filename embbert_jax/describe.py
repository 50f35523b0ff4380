"""`python -m embbert_jax.describe --preset embbert`: parameters and memory of a model config.

Prints parameters by part and weight / activation / total bytes under fp32 and the 8-bit policies
(memory.estimate). `--preset all` prints one row per preset (the README's table); `--compiled` adds XLA's
own figure for the jitted fp32 inference (`compiled_memory`) and its ratio to the estimate. Overrides:
`--set hidden=96 --set num_layers=2`.
"""

from __future__ import annotations


from rich import box
from rich.console import Console
from rich.table import Table

from embbert_jax import cli, configs, memory


def compiled_memory(cfg) -> dict[str, int]:
  """XLA's memory analysis of the jitted fp32 inference at batch 1, full length (weights are arguments).

  `argument` is the parameters plus the ids, `temp` the scratch XLA allocates for activations; their
  sum is what the formula estimates. Nothing is executed: the program is lowered from abstract shapes.
  """
  import jax
  import jax.numpy as jnp
  from embbert_jax import models

  model = models.build_model(cfg)
  ids = jax.ShapeDtypeStruct((1, cfg.max_len), jnp.int32)
  params = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, ids).compile()
  ma = compiled.memory_analysis()
  return {"argument": int(ma.argument_size_in_bytes), "temp": int(ma.temp_size_in_bytes),
          "output": int(ma.output_size_in_bytes),
          "total": int(ma.argument_size_in_bytes + ma.temp_size_in_bytes)}


def describe_one(cfg, policies, compiled: bool) -> list[Table]:
  title = f"{cfg.arch}: V={cfg.vocab_size} L={cfg.max_len} d={cfg.hidden}"
  parts = Table(title=title + " - parameters")
  parts.add_column("part")
  parts.add_column("params", justify="right")
  for part, n in memory.params_by_part(cfg).items():
    parts.add_row(part, f"{n:,}")
  parts.add_row("total", f"{memory.num_params(cfg):,}", style="bold")

  mem = Table(title=title + " - memory (batch 1, length L; decimal units)")
  for col in ("policy", "weights", "activations", "total"):
    mem.add_column(col, justify="right" if col != "policy" else "left")
  for pol in policies:
    r = memory.estimate(cfg, pol)
    mem.add_row(pol, memory.format_bytes(r.weight_bytes), memory.format_bytes(r.activation_bytes),
                memory.format_bytes(r.total_bytes))
  tables = [parts, mem]
  if compiled:
    tables.append(_compiled_table([("", cfg)]))
  return tables


def _compiled_table(named_cfgs) -> Table:
  t = Table(title="XLA memory_analysis of the jitted fp32 inference (arguments + temp) vs the estimate")
  for col in ("preset", "XLA args", "XLA temp", "XLA total", "estimate", "ratio"):
    t.add_column(col, justify="right")
  for name, cfg in named_cfgs:
    cm = compiled_memory(cfg)
    est = memory.total_bytes(cfg, "fp32")
    t.add_row(name, memory.format_bytes(cm["argument"]), memory.format_bytes(cm["temp"]),
              memory.format_bytes(cm["total"]), memory.format_bytes(est), f"{cm['total'] / est:.2f}")
  return t


def preset_table(names, compiled: bool) -> list[Table]:
  t = Table(title="Presets: parameters and memory (batch 1, full length; decimal MB)")
  for col in ("preset", "arch", "V", "L", "d", "N", "params", "fp32 weights", "fp32 acts", "fp32 total",
              "int8 total", "int8_full total"):
    t.add_column(col, justify="left" if col in ("preset", "arch") else "right")
  for name in names:
    c = configs.get_preset(name)
    r32 = memory.estimate(c, "fp32")
    t.add_row(name, c.arch, str(c.vocab_size), str(c.max_len), str(c.hidden), str(c.num_layers),
              f"{r32.params:,}", memory.format_bytes(r32.weight_bytes), memory.format_bytes(r32.activation_bytes),
              memory.format_bytes(r32.total_bytes), memory.format_bytes(memory.total_bytes(c, "int8")),
              memory.format_bytes(memory.total_bytes(c, "int8_full")))
  tables = [t]
  if compiled:
    tables.append(_compiled_table([(n, configs.get_preset(n)) for n in names]))
  return tables


def main(argv: list[str] | None = None) -> None:
  ap = cli.parser("python -m embbert_jax.describe", __doc__.splitlines()[0])
  ap.add_argument("--preset", default="embbert", help=f"one of {', '.join(configs.PRESETS)}, or 'all'")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
  ap.add_argument("--policy", action="append", choices=list(memory.POLICIES),
                  help="dtype policies to price (default: fp32, int8, int8_full)")
  ap.add_argument("--compiled", action="store_true", help="also ask XLA for the compiled program's memory")
  ap.add_argument("--markdown", action="store_true", help="Markdown tables (for the README)")
  args = ap.parse_args(argv)
  console = Console(no_color=args.markdown, width=160 if args.markdown else None)
  try:
    if args.preset == "all":
      tables = preset_table(list(configs.PRESETS), args.compiled)
    else:
      # model fields, as `describe` names them, or as train's --set does (model.hidden=96)
      sets = [a[len("model."):] if a.startswith("model.") else a for a in args.set]
      cfg = configs.apply_overrides(configs.get_preset(args.preset), sets)
      configs.validate(cfg)
      tables = describe_one(cfg, args.policy or ["fp32", "int8", "int8_full"], args.compiled)
  except (configs.ConfigError, ValueError) as e:
    cli.bad_input(e)
  for t in tables:
    if args.markdown:
      t.box, t.show_edge = box.MARKDOWN, True
    console.print(t)
  for name in args.policy or ["fp32", "int8", "int8_full"]:
    console.print(f"[dim]{name}: {memory.POLICIES[name].description}[/dim]")


if __name__ == "__main__":
  main()
