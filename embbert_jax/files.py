"""The one writer: every file a training run, a sweep or a study writes goes through here.

A whole file is replaced by a rename (`write_text_atomic`, `write_bytes_atomic`, `write_json_atomic`), so
a process killed at any moment leaves the old file or the new one, never half of one, and writers that
finish together each replace it whole. An append-only log (metrics.jsonl) adds one whole line per
`os.write` (`append_line`); a kill can still cut the last line short, so `read_jsonl` drops a final line
that has no newline, and whoever rewrites the log (a resumed run) writes it back atomically.

A folder a run writes to is held with `folder_lock` (an OS lock on `folder/.lock`, which dies with its
process): a second process gets FolderBusy naming the holder, the same process may take it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator


def unwritable(path: str | os.PathLike, folder: bool) -> str | None:
  """Why `path` (a folder if `folder`, else a file) cannot be created or written, in a few words naming
  the culprit, or None if it can: a file where a folder must be (or a folder where the file must be), a
  file on the way to it, something read-only. A command checks its outputs so before it starts work."""
  path = Path(path)
  if path.exists():
    if folder != path.is_dir():
      return f"{path} is a {'file' if folder else 'folder'}; give a {'folder' if folder else 'file'} path"
    if not os.access(path, os.W_OK) or (not folder and not os.access(path.parent, os.W_OK)):
      return f"{path} is read-only; make it writable or give another path"
    return None
  parent = path.parent
  while not parent.exists() and parent != parent.parent:
    parent = parent.parent
  if not parent.is_dir():
    return f"cannot create {path}: {parent} is a file, not a folder"
  if not os.access(parent, os.W_OK):
    return f"cannot create {path}: the folder {parent} is read-only"
  return None


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
  """Write via a temporary file in the same folder + rename (os.replace is atomic on one filesystem)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(payload)
  os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kw: Any) -> None:
  """JSON (indent 2 unless told otherwise), written whole."""
  write_text_atomic(path, json.dumps(obj, **{"indent": 2, **dumps_kw}))


def append_line(path: str | os.PathLike, line: str) -> None:
  """Appends `line` + newline with a single write on an O_APPEND descriptor (a line is never interleaved
  with another writer's; a kill can only cut the last one short, which read_jsonl drops)."""
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.write(fd, (line + "\n").encode("utf-8"))
  finally:
    os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[Any]:
  """The rows of a JSON-lines file; a last line without its newline (a write cut short) is dropped."""
  text = Path(path).read_text(encoding="utf-8")
  lines = text.split("\n")
  complete = lines[:-1]  # the part after the last newline is "" for a whole file, a torn row otherwise
  return [json.loads(line) for line in complete if line.strip()]


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
  """A matplotlib figure written whole (rendered in memory, in the format of the path's suffix)."""
  import io
  path = Path(path)
  buf = io.BytesIO()
  fig.savefig(buf, format=path.suffix.lstrip(".") or "png")
  write_bytes_atomic(path, buf.getvalue())
  return path


def sha256_file(path: str | os.PathLike) -> str:
  """Hex sha256 of a file, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


DAMAGED_INSTALL = "a damaged install (reinstall embbert_jax)"


def verified_file(path: str | os.PathLike, want: str, where: str, error: type[Exception],
                  remedy: str = DAMAGED_INSTALL) -> Path:
  """`path` if the file has the sha256 `want` (which `where` records), else `error` with one line naming
  the file, both digests and the remedy: shipped tokenizers, token vectors and encoders are all checked by
  this one rule."""
  got = sha256_file(path) if Path(path).is_file() else "missing"
  if got != want:
    raise error(f"{path}: sha256 {got[:16]} is not the {where}'s {want[:16]}: {remedy}")
  return Path(path)


class FolderBusy(RuntimeError):
  """Another process holds the folder's lock (a run in that workdir)."""


LOCK_NAME = ".lock"
_held: dict[Path, list] = {}  # folder -> [file descriptor, how many holds of this process]
_held_guard = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
  """Holds `folder` for this process while the block runs: an exclusive, non-blocking fcntl.flock on
  `folder/.lock`, which records the holder's pid and host. The kernel drops the lock when its process
  dies, so a file left by a killed run blocks nobody. Re-entrant within a process (the lock is counted,
  released by the last holder); another process gets FolderBusy at once."""
  folder = Path(folder).resolve()
  with _held_guard:
    entry = _held.get(folder)
    if entry is None:
      folder.mkdir(parents=True, exist_ok=True)
      fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        os.close(fd)
        who = f"pid {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
        raise FolderBusy(f"{folder} is in use by {who}; wait for that run to end (or stop it), or use "
                         "another folder") from None
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
      entry = _held[folder] = [fd, 0]
    entry[1] += 1
  try:
    yield folder
  finally:
    with _held_guard:
      entry[1] -= 1
      if entry[1] == 0:
        del _held[folder]
        os.close(entry[0])  # releases the flock


_scopes = threading.local()  # per thread: the ExitStacks of the running `releases_folder_locks` calls


def releases_folder_locks(fn: Callable) -> Callable:
  """Decorator: the folders `hold_folder` locks during a call of `fn` are released when that call ends
  (returns or raises), so one process can train many runs (a sweep's trials) one after another."""
  @functools.wraps(fn)
  def call(*args, **kwargs):
    stacks = _scopes.__dict__.setdefault("stacks", [])
    with contextlib.ExitStack() as stack:
      stacks.append(stack)
      try:
        return fn(*args, **kwargs)
      finally:
        stacks.pop()
  return call


def hold_folder(folder: str | os.PathLike) -> Path:
  """`folder_lock(folder)` until the innermost running `releases_folder_locks` call ends; returns the
  folder, absolute."""
  stacks = _scopes.__dict__.get("stacks")
  if not stacks:
    raise RuntimeError("hold_folder needs a call decorated with files.releases_folder_locks")
  return stacks[-1].enter_context(folder_lock(folder))
