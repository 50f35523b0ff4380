"""precompile.py: the programs a run will call, compiled ahead into the persistent cache from abstract
values, are exactly the ones the run then asks for (the run compiles nothing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = """
import sys, json
sys.path.insert(0, {tests!r})
from pathlib import Path
import numpy as np, jax
from jax import monitoring
from test_train import tiny_config, WORDS
from embbert_jax import precompile, programs, train
root = Path({root!r})
nothing = precompile.precompile(tiny_config(root))  # no persistent cache yet: nowhere to put programs
train.enable_compilation_cache(root / "xla")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # every program, however quick
misses = []
monitoring.register_event_listener(lambda e, **kw: misses.append(e) if e.endswith("cache_misses") else None)
rng = np.random.RandomState(1)  # lengths 4-5 and 41 words: two batch widths, 32 and 64
rows = [dict(text=" ".join(rng.choice(WORDS, int(n))) + (" good" if i % 2 else " bad"), label=i % 2)
        for i, n in enumerate(rng.choice([3, 4, 40], 320))]
(root / "varied.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
cfgs = []
for seed in (0, 5):
  c = tiny_config(root, steps=8, eval_every=4, seed=seed, bucket_window=4)
  c.task, c.model.max_len, c.bucket_compile_gflop = str(root / "varied.jsonl"), 64, 0.0
  cfgs.append(c)
out = precompile.precompile(cfgs[0], group_size=2)
ahead = len(misses)
programs.release_programs()  # the run starts from nothing kept in memory, as the next trial does
res = train.train_group(cfgs, [root / "a", root / "b"])
print("RESULT" + json.dumps(dict(nothing=nothing, out=out, ahead=ahead, run=len(misses) - ahead,
                                 widths=res[0]["widths"], status=[r["status"] for r in res])))
"""


def test_a_run_loads_every_program_precompile_compiled_and_compiles_none(tmp_path):
  script = RUNNER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                        env={**os.environ, "EMBBERT_JAX_COMPILATION_CACHE": ""})
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.split("RESULT", 1)[1])
  assert r["nothing"]["programs"] == 0
  # Initial params, state, the step and the evaluation at both widths, keep-best: each compiled once,
  # ahead...
  assert r["out"]["programs"] == 7 and r["ahead"] == 7
  # ... and the two-member bucketed run that follows, at both widths, finds every one of them.
  assert r["widths"] == [32, 64] and r["status"] == ["complete", "complete"]
  assert r["run"] == 0
