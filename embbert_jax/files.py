"""The one writer: every file a training run, a sweep or a study writes goes through here.

A whole file is replaced by a rename (`write_text_atomic`, `write_bytes_atomic`, `write_json_atomic`), so
a process killed at any moment leaves the old file or the new one, never half of one, and writers that
finish together each replace it whole. An append-only log (metrics.jsonl) adds one whole line per
`os.write` (`append_line`); a kill can still cut the last line short, so `read_jsonl` drops a final line
that has no newline, and whoever rewrites the log (a resumed run) writes it back atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


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
