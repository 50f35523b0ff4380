"""Compiled programs kept on disk under a key of our own, so a trial whose shapes were compiled before (a
promoted trial after other shapes flushed its programs, a sweep's seeds, a second sweep, a rerun) neither
traces, lowers nor compiles them again.

JAX's persistent compilation cache (train.enable_compilation_cache) saves the XLA compile, but its key is
a hash of the lowered module, so every reuse still traces the Python function and lowers it to StableHLO
first. On this 2-core CPU that is most of what a warm cache leaves (a 4-layer sweep config's 7 programs:
trace + lower 3.2 s, load 2.1 s; README, Compile time). Here each program of `programs.Programs` is a
`CachedProgram`: on a call it looks up the arguments' signature (tree, shapes, dtypes, weak types,
shardings) in memory, then on disk (`<compilation cache>/executables/<sha256>.xla`, the serialized
executable, zlib-compressed and written atomically), and only then lowers and compiles through the
jitted function (which the persistent cache may still serve) and saves the result.

The disk key is the program's own key (programs.Programs' key: kind, frozen model config, optimiser,
loss arguments, devices; and which program), the arguments' signature and `fingerprint()`: the versions
of jax, jaxlib, flax, optax and numpy, the backend and its devices, XLA_FLAGS, the jax config values that
change a lowering, and a hash of this package's source, so an edit to any module, or an upgrade, misses
rather than loads a stale program. A file that does not load (truncated, from another build) is deleted
and the program compiled again (kept anew unless JAX's cache served it: see CachedProgram). The cache is
on where JAX's persistent cache is on (EMBBERT_JAX_COMPILATION_CACHE "" or "0" turns both off) and
EMBBERT_JAX_EXECUTABLES is not "0".

A kept file is machine code this process runs, as JAX's own cache entries are: share the folder only with
machines you trust.

Not kept: programs `precompile` (sweep --compile-ahead) compiles ahead go to JAX's cache only, and a run
then loads them from there as before.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import pickle
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.monitoring
from jax.experimental import serialize_executable

from embbert_jax import files

# jax config values that change how a program is traced or lowered (the rest only change dispatch).
_CONFIG_FIELDS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl",
                  "jax_threefry_partitionable", "jax_numpy_rank_promotion", "jax_numpy_dtype_promotion")


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
  """sha256 over this package's Python sources (every module a program's tracing may run)."""
  h = hashlib.sha256()
  root = Path(__file__).resolve().parent
  for path in sorted(root.rglob("*.py")):
    h.update(str(path.relative_to(root)).encode())
    h.update(path.read_bytes())
  return h.hexdigest()


def fingerprint() -> str:
  """What, besides a program's key and arguments, decides the compiled program (module docstring)."""
  import flax
  import jaxlib
  import numpy
  import optax
  devs = jax.devices()
  parts = [jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__, numpy.__version__,
           sys.version.split()[0], devs[0].client.platform, devs[0].client.platform_version,
           repr([(d.id, d.device_kind) for d in devs]), os.environ.get("XLA_FLAGS", ""),
           repr([(k, getattr(jax.config, k, None)) for k in _CONFIG_FIELDS]), _source_hash()]
  return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()


def folder() -> Path | None:
  """Where executables are kept: <JAX's compilation cache folder>/executables, or None (off)."""
  if os.environ.get("EMBBERT_JAX_EXECUTABLES", "1") == "0":
    return None
  cache = jax.config.jax_compilation_cache_dir
  return Path(cache) / "executables" if cache else None


LOAD_EVENT = "/embbert_jax/executables/load_duration"  # jax.monitoring: seconds to load one from disk
# How calls were served in this process: "loaded" from disk, "compiled" (of which "kept": saved to disk).
STATS: collections.Counter = collections.Counter()
_local = threading.local()  # per thread (compile_ahead compiles on one): JAX's cache hits seen


def _count_hit(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _local.hits = getattr(_local, "hits", 0) + 1


@functools.lru_cache(maxsize=1)
def _listen() -> None:
  jax.monitoring.register_event_listener(_count_hit)


def _jax_cache_hits() -> int:
  """How many programs JAX's persistent cache has served to this thread so far."""
  _listen()
  return getattr(_local, "hits", 0)


def _leaf_signature(x: Any) -> tuple:
  if isinstance(x, jax.Array):
    return (x.shape, x.dtype, getattr(x, "weak_type", False), x.sharding)  # (key arrays have no weak type)
  if hasattr(x, "shape") and hasattr(x, "dtype"):  # NumPy arrays and scalars
    return (x.shape, x.dtype, "host")
  return (type(x),)  # a Python scalar: weakly typed


def signature(args: tuple) -> tuple:
  """The arguments as a jitted function distinguishes them: pytree structure, and per leaf its shape, dtype,
  weak type and sharding (host values: shape and dtype; Python scalars: their type). Hashable."""
  leaves, tree = jax.tree.flatten(args)
  return (tree, tuple(_leaf_signature(x) for x in leaves))


class CachedProgram:
  """`jax.jit(fn, **jit_kwargs)` called through compiled executables that persist on disk (module
  docstring). `.lower` and `.eval_shape` are the jitted function's; `.jitted` is that function.

  The function is renamed `<name>_<fingerprint prefix>` before it is jitted: the name is the lowered
  module's, which JAX's persistent cache keys on, so both caches miss together after a change. A program
  JAX's cache serves cannot be kept here (XLA:CPU re-serialises a loaded executable without some of its
  kernels: "Function ... not found" when the copy runs), and without the shared name a program JAX had
  cached before an edit would never be compiled fresh, and never kept, again."""

  def __init__(self, fn: Callable, key: tuple, name: str, **jit_kwargs):
    fn.__name__ = fn.__qualname__ = f"{name}_{fingerprint()[:12]}"
    self.jitted, self.key, self.name = jax.jit(fn, **jit_kwargs), key, name
    self._compiled: dict[tuple, Any] = {}

  def lower(self, *args, **kwargs):
    return self.jitted.lower(*args, **kwargs)

  def eval_shape(self, *args, **kwargs):
    return self.jitted.eval_shape(*args, **kwargs)

  def _cache_size(self) -> int:
    """Distinct argument signatures this program has compiled or loaded (as jax.jit's `_cache_size`)."""
    return len(self._compiled)

  def __call__(self, *args):
    sig = signature(args)
    compiled = self._compiled.get(sig)
    if compiled is None:
      compiled = self._compiled[sig] = self._load_or_compile(sig, args)
    return compiled(*args)

  def _path(self, where: Path, sig: tuple) -> Path:
    text = repr((self.name, self.key, str(sig[0]), [tuple(map(str, s)) for s in sig[1]], fingerprint()))
    return where / f"{hashlib.sha256(text.encode()).hexdigest()}.xla"

  def _load_or_compile(self, sig: tuple, args: tuple):
    where = folder()
    path = self._path(where, sig) if where is not None else None
    if path is not None and path.exists():
      try:
        t0 = time.perf_counter()
        blob, in_tree, out_tree, device_ids = pickle.loads(zlib.decompress(path.read_bytes()))
        # On the devices it was compiled for (the initial params' program of an 8-device run uses one).
        by_id = {d.id: d for d in jax.devices()}
        compiled = serialize_executable.deserialize_and_load(
            blob, in_tree, out_tree, execution_devices=[by_id[i] for i in device_ids])
        STATS["loaded"] += 1
        jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - t0)
        return compiled
      except Exception:  # truncated, or from another build: dropped, and the program compiled again
        path.unlink(missing_ok=True)
    hits = _jax_cache_hits()
    compiled = self.jitted.lower(*args).compile()
    STATS["compiled"] += 1
    if path is not None and _jax_cache_hits() == hits:  # a fresh compile (module docstring: not a load)
      try:
        device_ids = [d.id for d in compiled._executable._unloaded_executable.device_list]
        payload = zlib.compress(pickle.dumps((*serialize_executable.serialize(compiled), device_ids)), 1)
        files.write_bytes_atomic(path, payload)
        STATS["kept"] += 1
      except (ValueError, NotImplementedError, OSError, pickle.PicklingError, AttributeError):
        pass  # not serialisable (or a read-only folder): this process keeps it in memory only
    return compiled


def cached_float(name: str, key: tuple, compute: Callable[[], float]) -> float:
  """`compute()`, kept on disk beside the executables under (name, key, fingerprint()): for figures that
  cost a trace and a lowering each (programs.width_gflop's FLOP counts)."""
  where = folder()
  if where is None:
    return float(compute())
  path = where / "values" / f"{hashlib.sha256(repr((name, key, fingerprint())).encode()).hexdigest()}.json"
  try:
    return float(json.loads(path.read_text())["value"])
  except (OSError, ValueError, KeyError, TypeError):
    value = float(compute())
    try:
      files.write_json_atomic(path, {"name": name, "key": repr(key), "value": value})
    except OSError:
      pass
    return value

