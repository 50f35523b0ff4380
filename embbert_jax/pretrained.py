"""Pre-trained encoders that ship inside the package (`embbert_jax/pretrained/<name>/`), loaded by checksum.

A shipped folder (FORMAT) holds:

* `params.npz`: the encoder's params only (no MLM/NSP heads), named "encoder/..." as
  artifacts.flatten_params names them, stored as float16 (half the bytes); `load` upcasts to float32;
* `config.json`: {"format", "model": the model config, "tokenizer": {"sha256", "pieces", and "file" (a copy
  beside it) or "shipped" (one of the package's tokenizers, embbert_jax/tokenizers, named by file)}};
* `tokenizer.model`: the tokenizer, copied only when it is not one of the shipped tokenizers;
* `manifest.json`: {"format", "name", "params_file", "params_sha256", "params_bytes", "dtype",
  "fp16_max_abs_error", "steps", "tokenizer_sha256", "made_by", "source", "pretraining": the pre-training's
  own manifest (the exact command, corpus name and sha256, seed, steps, wall time, final held-out MLM/NSP
  metrics, the recipe)}.

`make` writes one from a finished pre-training (its workdir or model folder; `python -m embbert_jax.ship
encoder WORKDIR --name NAME`). `load` checks params.npz against the manifest's sha256 first (a mismatch is a
one-line PretrainedError naming the file). `inits.resolve('auto')` takes a shipped encoder whose model
config is the run's (`same_encoder`) with the run's tokenizer; `--init pretrained` or `--init NAME` ask
for it by rule or by name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from embbert_jax import artifacts, configs, memory
from embbert_jax import tokenizer as tok_lib
from embbert_jax.files import sha256_file, verified_file, write_bytes_atomic, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent / "pretrained"
FORMAT = "embbert_jax.pretrained/1"
PARAMS_FILE = "params.npz"
# What the package may carry in weights and tokenizers together (pretrained/, supernets/, tokenizers/).
SHIP_BUDGET_BYTES = 25_000_000
# Model fields that do not change what an encoder's params are or mean: the classifier head's size (the
# encoder ships without heads), the dropout rate (a training regulariser) and the conv's lowering (the same
# math). Every other field must be equal for `auto` to take a shipped encoder.
FREE_FIELDS = ("num_labels", "dropout", "conv_impl")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PretrainedError(ValueError):
  """A shipped encoder that cannot be made or used; the message is one line."""


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}


def is_pretrained(folder: str | os.PathLike) -> bool:
  """A shipped-encoder folder (its manifest has this module's format)."""
  return _read_json(Path(folder) / "manifest.json").get("format") == FORMAT


def folders(root: str | os.PathLike | None = None) -> list[Path]:
  """Every shipped encoder under `root` (default: the package's pretrained/), by name."""
  root = Path(root) if root is not None else ROOT
  return [d.resolve() for d in sorted(root.iterdir()) if d.is_dir() and is_pretrained(d)] if root.is_dir() else []


def same_encoder(a, b) -> bool:
  """Whether model configs `a` and `b` have the same encoder: every field equal but FREE_FIELDS."""
  da, db = (configs.ModelConfig.from_dict(m).to_dict() for m in (a, b))
  return all(da[k] == db[k] for k in da if k not in FREE_FIELDS)


def manifest(folder: str | os.PathLike) -> dict:
  return _read_json(Path(folder) / "manifest.json")


def model_config(folder: str | os.PathLike) -> configs.ModelConfig:
  meta = _read_json(Path(folder) / artifacts.CONFIG_FILE)
  try:
    return configs.model_config(**meta["model"])
  except (KeyError, TypeError, configs.ConfigError) as e:
    raise PretrainedError(f"corrupt {Path(folder) / artifacts.CONFIG_FILE}: {type(e).__name__}") from None


def tokenizer_sha256(folder: str | os.PathLike) -> str:
  return manifest(folder).get("tokenizer_sha256", "")


def tokenizer_path(folder: str | os.PathLike) -> Path:
  """The encoder's tokenizer: its copy, or the shipped tokenizer it names; sha256-checked."""
  folder = Path(folder)
  tok = _read_json(folder / artifacts.CONFIG_FILE).get("tokenizer") or {}
  path = folder / tok["file"] if tok.get("file") else tok_lib.SHIPPED / str(tok.get("shipped"))
  _check_sha(path, tok.get("sha256", ""), "config")
  return path


def _check_sha(path: Path, want: str, where: str) -> None:
  verified_file(path, want, where, PretrainedError, "the file is damaged or replaced (reinstall embbert_jax, or "
                "remake it with python -m embbert_jax.ship encoder)")


def verify(folder: str | os.PathLike) -> None:
  """PretrainedError (one line, naming the file) unless params.npz has the manifest's sha256."""
  m = manifest(folder)
  _check_sha(Path(folder) / m.get("params_file", PARAMS_FILE), m.get("params_sha256", ""), "manifest")


def load(folder: str | os.PathLike) -> tuple[dict[str, Any], configs.ModelConfig, dict]:
  """(encoder params as float32 numpy arrays, model config, manifest) of a shipped folder, checksum first."""
  folder = Path(folder)
  verify(folder)
  m, cfg = manifest(folder), model_config(folder)
  with np.load(folder / m.get("params_file", PARAMS_FILE), allow_pickle=False) as z:
    flat = {k: z[k].astype(np.float32) for k in z.files}
  want = {"/".join(s.path): s.shape for s in memory.param_shapes(cfg) if s.path[0] == "encoder"}
  if {k: tuple(v.shape) for k, v in flat.items()} != want:
    raise PretrainedError(f"{folder / PARAMS_FILE} does not hold the encoder of its config.json")
  return artifacts.unflatten_params(flat)["encoder"], cfg, m


def _shipped_tokenizer_file(digest: str) -> str | None:
  """The name of the shipped tokenizer with this sha256 (then the encoder refers to it instead of a copy)."""
  index = tok_lib.shipped_index() or {}
  return next((e["file"] for e in index.get("tokenizers", {}).values() if e.get("sha256") == digest), None)


def shipped_bytes(exclude: Path | None = None) -> int:
  """Bytes of everything shipped in the package: pretrained/, supernets/, tokenizers/, wordvecs/ (less
  `exclude`)."""
  pkg = ROOT.parent
  roots = [ROOT, pkg / "supernets", tok_lib.SHIPPED, pkg / "wordvecs"]
  return sum(f.stat().st_size for r in roots if r.is_dir() for f in r.rglob("*")
             if f.is_file() and (exclude is None or exclude not in f.parents))


def make(source: str | os.PathLike, name: str, root: str | os.PathLike | None = None,
         command: str = "") -> Path:
  """Writes `<root>/<name>/` (default root: the package's pretrained/) from a finished standalone
  pre-training (`python -m embbert_jax.pretrain` workdir or its model/ folder), replacing any folder of
  that name; PretrainedError (one line) for anything that cannot ship. Returns the folder."""
  src = Path(source)
  src = src / "model" if (src / "model").is_dir() else src
  if not src.is_dir():
    raise PretrainedError(f"{source}: no such folder (a python -m embbert_jax.pretrain workdir or its model/)")
  if not _NAME.fullmatch(name):
    raise PretrainedError(f"name {name!r}: letters, digits, '.', '_' and '-' only (e.g. embbert-v8192)")
  pre = _read_json(src / "manifest.json")
  if not pre:
    raise PretrainedError(f"{src} has no manifest.json: not a pre-training's model folder "
                          "(python -m embbert_jax.pretrain writes WORKDIR/model)")
  if "supernet" in pre:
    raise PretrainedError(f"{src} is a supernet: ship it as a folder under embbert_jax/supernets/ instead")
  if pre.get("stopped_by") == "in progress":
    raise PretrainedError(f"{src} is a checkpoint of a pre-training still running or killed (stopped_by 'in "
                          f"progress'): let it finish (rerun the same pretrain command) and ship that")
  params, cfg, tok = artifacts.load_model(src)  # CheckpointError (one line) if it is no saved model
  if tok is None or not Path(tok).is_file():
    raise PretrainedError(f"{src} has no tokenizer.model: a shipped encoder needs the tokenizer it was trained with")
  flat = artifacts.flatten_params({"encoder": params["encoder"]})
  half = {k: v.astype(np.float16) for k, v in flat.items()}
  bad = [k for k, v in half.items() if not np.isfinite(v).all()]
  if bad:
    raise PretrainedError(f"{bad[0]} overflows float16 (|x| > 65504): it cannot ship as fp16")
  err = max(float(np.max(np.abs(half[k].astype(np.float32) - flat[k].astype(np.float32)), initial=0.0))
            for k in flat)
  tok_sha = sha256_file(tok)
  shipped_tok = _shipped_tokenizer_file(tok_sha)
  dest = (Path(root) if root is not None else ROOT) / name
  tmp = dest.with_name(f".{name}.tmp{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  artifacts.write_npz(tmp / PARAMS_FILE, half)
  tok_ref = {"sha256": tok_sha, "pieces": tok_lib.Tokenizer(tok).vocab_size}
  if shipped_tok:
    tok_ref["shipped"] = shipped_tok
  else:
    tok_ref["file"] = artifacts.TOKENIZER_FILE
    write_bytes_atomic(tmp / artifacts.TOKENIZER_FILE, Path(tok).read_bytes())
  write_text_atomic(tmp / artifacts.CONFIG_FILE, json.dumps(
      {"format": FORMAT, "model": cfg.to_dict(), "tokenizer": tok_ref}, indent=2, sort_keys=True) + "\n")
  write_json_atomic(tmp / "manifest.json", {
      "format": FORMAT, "name": name, "params_file": PARAMS_FILE, "params_sha256": sha256_file(tmp / PARAMS_FILE),
      "params_bytes": (tmp / PARAMS_FILE).stat().st_size, "dtype": "float16", "fp16_max_abs_error": err,
      "steps": int(pre.get("steps", 0)), "tokenizer_sha256": tok_sha, "made_by": command,
      "source": str(src.resolve()), "pretraining": pre}, indent=1)
  total = shipped_bytes(exclude=dest) + sum(f.stat().st_size for f in tmp.iterdir())
  if root is None and total > SHIP_BUDGET_BYTES:
    shutil.rmtree(tmp, ignore_errors=True)
    raise PretrainedError(f"the package would ship {total / 1e6:.1f} MB, over its {SHIP_BUDGET_BYTES / 1e6:.0f} MB "
                          f"budget: remove a folder under {ROOT} first or ship a smaller encoder")
  old = dest.with_name(f".{name}.old{os.getpid()}")
  if dest.exists():
    os.replace(dest, old)
  os.replace(tmp, dest)
  shutil.rmtree(old, ignore_errors=True)
  return dest
