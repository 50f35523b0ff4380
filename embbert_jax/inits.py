"""Where a fine-tuning's encoder comes from: `python -m embbert_jax.train --init auto|supernet|pretrained|scratch|DIR`.

* `scratch`: random initialisation.
* `supernet`: the slice this config inherits from a pre-trained supernet (supernet.extract) that holds
  it: one shipped in the package (embbert_jax/supernets/*) or cached (<cache>/supernets/*, where
  `python -m embbert_jax.supernet_train` writes by default) with the same vocabulary and tokenizer, of
  which the config is a sub-network; the one with the most pre-training steps wins.
* `pretrained`: an encoder shipped in the package (embbert_jax/pretrained/*, pretrained.py) whose model
  config is the run's (pretrained.same_encoder: every field but the head size, dropout and conv lowering)
  and whose tokenizer is the run's; the one with the most pre-training steps wins.
* `DIR`: a standalone pre-training (`python -m embbert_jax.pretrain` workdir or its model/ folder), a
  shipped encoder's folder (or its NAME under embbert_jax/pretrained/), or a supernet folder (its manifest
  names the supernet): the config must then be one of its sub-networks.
* `embeddings`: pre-trained token vectors (wordvecs.py: a PPMI-SVD of the corpus, shipped for the
  package's tokenizers, else built in about 20 s), the rest of the model random; trains with the
  from-scratch recipe.
* `auto` (default): the in-run pre-training when pretrain.steps > 0, else `supernet` when one matches,
  else `pretrained` when one matches, else `embeddings`. With several configs (a sweep) each choice must fit
  them all, so a standalone encoder (one config) applies only when they all share its config.

The encoder reaches the model through cfg.init_from (programs.load_encoder slices a supernet), so a
pre-trained init also makes `--recipe auto` pick the fine-tuning recipe (recipes.choose); token vectors
through cfg.token_vectors (configs.init_fields), which leaves the recipe at scratch; with them, unless
cfg.label_columns is off, the table's last columns come from a linear model of the training split
(labelcols.py, fitted by the trainer, which has the split).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from embbert_jax import configs, data, files, pretrained, supernet
from embbert_jax import tokenizer as tok_lib
from embbert_jax.programs import is_supernet, load_encoder

CHOICES = ("auto", "supernet", "pretrained", "embeddings", "scratch")
SHIPPED = Path(__file__).resolve().parent / "supernets"


class InitError(ValueError):
  """An init that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Init:
  kind: str  # scratch | embeddings | supernet | pretrained | pretrain_steps
  path: str = ""  # the model folder the encoder comes from
  steps: int = 0  # its pre-training steps (manifest), or the in-run pre-training's

  def record(self) -> dict:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    if self.kind == "scratch":
      return "init: scratch (random initialisation)"
    if self.kind == "embeddings":
      return ("init: embeddings: the token table from the corpus's token vectors (PPMI-SVD, wordvecs.py), "
              "the rest random")
    if self.kind == "pretrain_steps":
      return f"init: {self.steps} MLM+NSP pre-training steps in this run"
    what = "the slice of the supernet" if self.kind == "supernet" else "the pre-trained encoder"
    if self.kind == "pretrained" and pretrained.is_pretrained(self.path):
      what = "the shipped pre-trained encoder"
    return f"init: {self.kind}: {what} in {self.path} ({self.steps} pre-training steps)"


def supernet_root(cache_dir: str | None = None) -> Path:
  """<cache>/supernets: supernet_train's default workdirs live here."""
  return data.resolve_cache_dir(cache_dir or None) / "supernets"


def _model_folder(path: Path) -> Path:
  return path / "model" if (path / "model").is_dir() else path


def _manifest(folder: Path) -> dict:
  """The folder's manifest.json ({} without one); InitError naming it when it is not JSON. (The probe
  pretrained.is_pretrained reads a broken one as "not a shipped encoder" instead: a probe must not fail.)"""
  f = folder / "manifest.json"
  try:
    return json.loads(f.read_text()) if f.is_file() else {}
  except (OSError, ValueError) as e:
    raise InitError(f"{f}: not a readable manifest ({str(e).splitlines()[0]}); remake the folder") from None


def _saved_config(folder: Path):
  try:
    return configs.model_config(**json.loads((folder / "config.json").read_text())["model"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InitError(f"{folder} is not a saved model (config.json: {type(e).__name__})") from None


def _run_tokenizer(cfg) -> Path:
  return tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None,
                               cache_dir=cfg.cache_dir or None).model_path


def _same_tokenizer(folder: Path, cfg) -> bool:
  if pretrained.is_pretrained(folder):  # a shipped encoder names its tokenizer's sha256
    return pretrained.tokenizer_sha256(folder) == files.sha256_file(_run_tokenizer(cfg))
  saved = folder / "tokenizer.model"
  return not saved.is_file() or files.sha256_file(saved) == files.sha256_file(_run_tokenizer(cfg))


def supernet_folders(cache_dir: str | None = None) -> list[Path]:
  """Every saved supernet, shipped then cached."""
  out = []
  for root in (SHIPPED, supernet_root(cache_dir)):
    if root.is_dir():
      out += [_model_folder(d).resolve() for d in sorted(root.iterdir())
              if d.is_dir() and is_supernet(_model_folder(d))]
  return out


def _holders(cfg, models) -> list[tuple[str, object]]:
  """(name, model config) pairs that must all take the encoder: by default the config's own model."""
  return list(models) if models is not None else [(f"preset {cfg.preset}", cfg.model)]


def _not_held(folder: Path, models) -> tuple[str, str, int] | None:
  """(name, why, how many) of the first of `models` that is no sub-network of the supernet in `folder`."""
  sup = _saved_config(folder)
  missed = []
  for name, model in models:
    try:
      supernet.check_child(sup, configs.ModelConfig.from_dict(model))
    except supernet.SupernetError as e:
      missed.append((name, str(e)))
  return (*missed[0], len(missed)) if missed else None


def find_supernet(cfg, models=None) -> Path | None:
  """The shipped or cached supernet with cfg's vocabulary and tokenizer that holds cfg.model (most steps),
  or every model config of `models` ((name, model) pairs: a sweep's fitting configs)."""
  models = _holders(cfg, models)
  best, best_steps = None, -1
  for folder in supernet_folders(cfg.cache_dir or None):
    m = _manifest(folder)
    if any(m.get("vocab_size") != model.vocab_size for _, model in models):
      continue
    if _not_held(folder, models) is None and int(m.get("steps", 0)) > best_steps and _same_tokenizer(folder, cfg):
      best, best_steps = folder, int(m.get("steps", 0))
  return best


def find_pretrained(cfg, models=None) -> Path | None:
  """The shipped encoder whose model config equals cfg.model's (or every config of `models`), up to
  pretrained.FREE_FIELDS, with the run's tokenizer (most pre-training steps first), or None. The one
  rule of `auto` and `--init pretrained`: the tokenizer is only compared once the configs are equal."""
  models = _holders(cfg, models)
  best, best_steps = None, -1
  for folder in pretrained.folders():
    saved, steps = pretrained.model_config(folder), int(_manifest(folder).get("steps", 0))
    if all(pretrained.same_encoder(saved, model) for _, model in models) and steps > best_steps \
        and _same_tokenizer(folder, cfg):
      best, best_steps = folder, steps
  return best


def _verified(folder: Path) -> None:
  try:
    pretrained.verify(folder)
  except pretrained.PretrainedError as e:
    raise InitError(str(e)) from None


def resolve(cfg, spec: str, models=None) -> Init:
  """The Init of `--init spec` for the training config `cfg`; InitError (one line) if it cannot be used.
  `models`: (name, model config) pairs that must all take it (the sweep's fitting configs; default
  cfg.model): `auto` then finds a supernet that holds all of them (or a shipped encoder of all their
  configs), a DIR must fit each."""
  spec = spec or "auto"
  models = _holders(cfg, models)
  if spec == "auto" and cfg.get("init_from"):  # --set init_from=DIR
    spec = cfg.init_from
  steps = int(cfg.pretrain.steps)
  if steps > 0:
    if spec not in ("auto", "scratch"):
      raise InitError(f"--init {spec} and --pretrain-steps {steps} both give the encoder; use one")
    return Init("pretrain_steps", steps=steps)
  if spec in ("scratch", "embeddings"):
    return Init(spec)
  v = cfg.model.vocab_size
  what = models[0][0] if len(models) == 1 else f"all {len(models)} configs"
  if spec in ("auto", "supernet"):
    found = find_supernet(cfg, models)
    if found is not None:
      return Init("supernet", str(found), int(_manifest(found).get("steps", 0)))
    if spec == "supernet":
      raise InitError(f"no shipped or cached supernet (in {supernet_root(cfg.cache_dir or None)}) holds {what} "
                      f"at vocabulary {v}; make one with `python -m embbert_jax.supernet_train "
                      f"--space default --budget 2MB --vocab {v}` (hours on a CPU) or use --init scratch")
  if spec in ("auto", "pretrained"):
    found = find_pretrained(cfg, models)
    if found is not None:
      _verified(found)
      return Init("pretrained", str(found), int(_manifest(found).get("steps", 0)))
    if spec == "auto":
      return Init("embeddings")
    names = ", ".join(d.name for d in pretrained.folders()) or "none"
    raise InitError(f"no encoder shipped in {pretrained.ROOT} (there: {names}) has the model config and "
                    f"tokenizer of {what} (vocabulary {v}); use --init auto or scratch")
  path = Path(spec).expanduser()
  if not path.exists() and pretrained.is_pretrained(pretrained.ROOT / spec):  # --init NAME of a shipped one
    path = pretrained.ROOT / spec
  if not path.exists():
    raise InitError(f"--init {spec}: no such folder (expected auto, supernet, pretrained, embeddings, scratch, a"
                    f" pre-training folder or a shipped encoder's name)")
  folder = _model_folder(path).resolve()
  _saved_config(folder)  # InitError unless it is a saved model
  manifest = _manifest(folder)
  if not _same_tokenizer(folder, cfg):
    raise InitError(f"the tokenizer of {folder} differs from the tokenizer this run uses "
                    f"(vocabulary {cfg.model.vocab_size}, corpus {cfg.corpus or 'default'}): its token ids "
                    f"would mean other pieces")
  if is_supernet(folder):
    missed = _not_held(folder, models)
    if missed:
      name, why, n = missed
      more = f" (and {n - 1} more of the {len(models)} configs)" if n > 1 else ""
      raise InitError(f"{name} is not a sub-network of the supernet in {folder}: {why}{more}")
    return Init("supernet", str(folder), int(manifest.get("steps", 0)))
  for name, model in models:  # a standalone pre-training fits the configs of its encoder's shapes only
    try:
      load_encoder(str(folder), model)
    except ValueError as e:
      raise InitError(str(e).splitlines()[0] + (f" ({name})" if len(models) > 1 else "")) from None
  steps_done = manifest.get("steps") or _pretrain_result_steps(path)
  return Init("pretrained", str(folder), int(steps_done or 0))


def carried(cfg) -> Init:
  """The Init a training config carries (the inverse of configs.init_fields), for the records of runs
  started without `train --init` (a study's arms); `cfg` is a ConfigDict or its saved config.json dict."""
  steps = int((cfg.get("pretrain") or {}).get("steps", 0) or 0)
  path = str(cfg.get("init_from") or "")
  if steps > 0:
    return Init("pretrain_steps", path, steps)
  if path:
    folder = _model_folder(Path(path))
    kind = "supernet" if is_supernet(folder) else "pretrained"
    return Init(kind, path, int(_manifest(folder).get("steps") or _pretrain_result_steps(Path(path)) or 0))
  return Init("embeddings") if cfg.get("token_vectors") else Init("scratch")


def _pretrain_result_steps(path: Path) -> int:
  for f in (path / "result.json", path.parent / "result.json"):
    if f.is_file():
      return int(json.loads(f.read_text()).get("steps", 0))
  return 0
