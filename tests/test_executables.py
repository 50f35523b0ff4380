"""executables.py: a program compiled in one process is loaded, not traced or compiled, by the next, and
gives the same run bit for bit; a damaged file is dropped; the disk key separates what differs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax import executables

RUNNER = """
import sys, json, hashlib
sys.path.insert(0, {tests!r})
from pathlib import Path
import numpy as np, jax
from test_train import tiny_config
from embbert_jax import executables, train
root = Path({root!r})
train.enable_compilation_cache(root / "xla")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
cfg = tiny_config(root, steps=6, eval_every=3, seed=3)
res = train.train_and_evaluate(cfg, root / {workdir!r})
params = np.load(next((root / {workdir!r}).rglob("params.npz")))
digest = hashlib.sha256(b"".join(params[k].tobytes() for k in sorted(params.files))).hexdigest()
print("RESULT" + json.dumps(dict(stats=dict(executables.STATS), digest=digest, val=res["validation"],
                                 test=res["test"])))
"""


def _run(tmp_path: Path, workdir: str, flags: str = "") -> dict:
  script = RUNNER.format(tests=str(Path(__file__).parent), root=str(tmp_path), workdir=workdir)
  env = {k: v for k, v in os.environ.items() if k != "EMBBERT_JAX_EXECUTABLES"}
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_a_second_process_loads_every_program_and_trains_the_same_bits(tmp_path):
  first = _run(tmp_path, "a")
  kept = sorted((tmp_path / "xla" / "executables").glob("*.xla"))
  # Initial params, state, the step, the evaluation forward pass, keep-best: compiled fresh and kept.
  assert first["stats"].get("loaded", 0) == 0, first["stats"]
  assert first["stats"]["compiled"] == first["stats"]["kept"] == len(kept) >= 5
  second = _run(tmp_path, "b")
  assert second["stats"].get("compiled", 0) == 0 and second["stats"]["loaded"] == len(kept)
  assert second["digest"] == first["digest"]
  assert (second["val"], second["test"]) == (first["val"], first["test"])
  # A damaged file (a write cut short on another machine) is dropped and its program compiled again (JAX's
  # persistent cache, which got the same fresh compile, serves it), the run unchanged.
  kept[0].write_bytes(kept[0].read_bytes()[:100])
  third = _run(tmp_path, "c")
  assert third["stats"]["compiled"] == 1 and third["stats"].get("kept", 0) == 0
  assert third["stats"]["loaded"] == len(kept) - 1 and not kept[0].exists()
  assert third["digest"] == first["digest"]


def test_kept_programs_of_a_data_parallel_run_on_8_devices_load_and_train_the_same_bits(tmp_path):
  eight = "--xla_force_host_platform_device_count=8"
  first, second = _run(tmp_path, "a", eight), _run(tmp_path, "b", eight)
  assert first["stats"]["kept"] >= 5 and second["stats"] == {"loaded": first["stats"]["kept"]}
  assert second["digest"] == first["digest"] and second["val"] == first["val"]


def test_the_signature_separates_what_jit_separates():
  sig = lambda *a: executables.signature(a)
  x = jnp.zeros((2, 3), jnp.float32)
  assert sig(x) == sig(jnp.ones((2, 3), jnp.float32))  # values do not matter
  assert sig(x) != sig(jnp.zeros((2, 4), jnp.float32))
  assert sig(x) != sig(jnp.zeros((2, 3), jnp.int32))
  assert sig(x) != sig(np.zeros((2, 3), np.float32))  # a host array is placed by the program
  assert sig(jnp.asarray(1.0)) != sig(jnp.asarray(1.0, jnp.float32))  # weakly typed or not
  assert sig(np.int32(1)) != sig(1)
  assert sig({"a": x}) != sig({"b": x}) and sig((x, x)) != sig([x, x])
  assert sig(jax.random.key(0)) == sig(jax.random.key(1)) != sig(jax.random.split(jax.random.key(0)))


def test_the_disk_key_holds_the_program_key_its_name_and_the_fingerprint(tmp_path, monkeypatch):
  monkeypatch.setattr(executables, "folder", lambda: tmp_path / "executables")
  x = jnp.zeros((3,), jnp.float32)
  p = lambda key, name: executables.CachedProgram(lambda a: a + 1, key=key, name=name)._path(
      executables.folder(), executables.signature((x,)))
  base = p(("m", 1), "step")
  assert base.parent == tmp_path / "executables"
  assert base == p(("m", 1), "step") and base != p(("m", 2), "step") and base != p(("m", 1), "apply")
  monkeypatch.setattr(executables, "fingerprint", lambda: "another build")
  assert p(("m", 1), "step") != base
  monkeypatch.undo()
  monkeypatch.setenv("EMBBERT_JAX_EXECUTABLES", "0")
  assert executables.folder() is None
