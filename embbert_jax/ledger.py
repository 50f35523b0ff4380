"""The sweep's ledger: one Optuna RDB study that any number of worker processes share.

Storage is a SQLite file by default (one machine, no server) or any SQLAlchemy URL, e.g.
postgresql+psycopg2://user:pass@host/db, for workers on many machines. SQLite is for one machine only:
its locking is unreliable on network filesystems (NFS, SMB, sshfs), and this module warns when the file
lives on one.

How the shared-ledger failure modes are met:

* no trial twice: every trial enters the ledger as WAITING with its parameters fixed, and only while the
  worker holds the study's lease lock (a row in our own table `embbert_sweep_locks`, INSERT-or-wait,
  renewed by a thread while its holder lives, expiring `LOCK_LEASE_S` after its holder died), after
  checking that no trial of the same hash exists (config + train-grid knobs). A worker starts a trial by
  moving it WAITING -> RUNNING, which the storage does atomically (a second claimant gets False); it may
  claim several at once, the member trials of one config that it trains together, with one heartbeat
  thread for all of them. Seeded samplers that propose the same first trial on every machine therefore
  cannot duplicate work: the second proposal is found in the ledger and rejected.
* "database is locked": SQLite transactions begin IMMEDIATE (they take the write lock up front and wait
  for it up to `SQLITE_TIMEOUT_S`, instead of failing on a lock upgrade), the file is in WAL mode, and
  every ledger call is retried on lock/busy/connection errors.
* trials left RUNNING by a killed worker: a thread records a heartbeat every `heartbeat_interval` s; a
  RUNNING trial whose heartbeat is older than `grace_period` is put back to WAITING (same trial number,
  its checkpoint resumes) and retried by any worker. Its heartbeat row exists before it becomes RUNNING,
  so no window leaves a trial RUNNING without one.
* a preempted trial is not a failure: SIGTERM, Ctrl-C and stale heartbeats requeue the trial; only after
  `max_attempts` starts (a config that kills its worker, e.g. out of memory) is it marked FAIL.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

SQLITE_TIMEOUT_S = 60
LOCK_LEASE_S = 60.0
RETRY_FOR_S = 300.0
_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "lustre", "gpfs", "ceph",
               "glusterfs", "fuse.glusterfs", "afs")

# System attributes of a trial (ours are prefixed to stay apart from the samplers').
WORKER, ATTEMPTS, PREEMPTED, HASH = "embbert:worker", "embbert:attempts", "embbert:preempted", "embbert:hash"
SOLO = "embbert:solo"  # its group program failed: the trial trains alone from now on
ASHA_STATE = "asha"  # study attr of a multi-fidelity sweep: its plan and clock (scheduler.py)
COMPILE_AHEAD = "compile_ahead/"  # + worker id: the study attribute of what its CompileAhead compiled
TARGET = "embbert:target_rung"  # multi-fidelity sweeps: the rung the trial may train to (scheduler.py)

STALE = "heartbeat stopped"

# Optuna's INFO lines ("A new study created ...") would interleave with the sweep's own.
optuna.logging.set_verbosity(optuna.logging.WARNING)

_METADATA = sa.MetaData()
_LOCKS = sa.Table("embbert_sweep_locks", _METADATA,
                  sa.Column("name", sa.String(512), primary_key=True),
                  sa.Column("holder", sa.String(256), nullable=False),
                  sa.Column("expires", sa.Float, nullable=False))


class LedgerError(RuntimeError):
  """The ledger cannot be opened or used; the message is one line."""


def worker_id() -> str:
  return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def redact(text: str, url: str = "") -> str:
  """`text` (a URL, a command-line argument, a message) with the password of every URL in it masked: all
  from the user's ':' to the URL's last '@' (an unescaped '@' or ':' may sit in the password). With the
  `url` that `text` is about, also the pieces of its password that a driver's error quotes on their own
  (a URL parser that splits "p@ss:w@rd" at an '@' or ':' reports "w@rd" as a host or a port)."""
  out = re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", text)
  secret = re.search(r"://[^:/@\s]*:(\S*)@", url)
  if secret:
    pw = secret.group(1)
    cuts = [i for i, c in enumerate(pw) if c in "@:"]
    pieces = {pw, *(pw[i + 1:] for i in cuts), *(pw[:i] for i in cuts)}
    for piece in sorted((p for p in pieces if len(p) >= 2), key=len, reverse=True):
      out = out.replace(piece, "***")
  return out


def sqlite_path(url: str) -> Path | None:
  if not url.startswith("sqlite:///"):
    return None
  return Path(url[len("sqlite:///"):])


def _filesystem_type(path: Path) -> str:
  """The type of the filesystem holding `path`, from /proc/mounts (longest mount-point prefix)."""
  best, kind = "", ""
  try:
    with open("/proc/mounts") as f:
      for line in f:
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
          best, kind = parts[1], parts[2]
  except OSError:
    pass
  return kind


_LOCKED = ("database is locked", "database table is locked", "busy", "deadlock", "could not serialize")
_CREATE_RACE = ("duplicate key", "already exists", "unique constraint")
_DROPPED = ("server closed", "connection reset", "connection was closed", "terminating connection",
            "timeout expired")


def _is_transient(e: BaseException, markers: Sequence[str] = _LOCKED + _DROPPED) -> bool:
  """Lock contention, or a connection that dropped mid-sweep: worth retrying."""
  text = ""
  while e is not None:
    text += f" {type(e).__name__} {e}"
    e = e.__cause__ or e.__context__
  text = text.lower()
  return any(s in text for s in markers)


def retry(fn: Callable, *args, _markers: Sequence[str] = _LOCKED + _DROPPED, **kwargs):
  """fn(*args, **kwargs), retried with backoff for up to RETRY_FOR_S on transient storage errors."""
  deadline, delay = time.monotonic() + RETRY_FOR_S, 0.05
  while True:
    try:
      return fn(*args, **kwargs)
    except (sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, sqlite3.Error) as e:
      if not _is_transient(e, _markers) or time.monotonic() > deadline:
        raise
      time.sleep(delay)
      delay = min(delay * 2, 2.0)


def _sqlite_immediate(engine: sa.engine.Engine) -> None:
  """SQLAlchemy's pysqlite recipe: we issue BEGIN ourselves, as BEGIN IMMEDIATE (see module docstring)."""
  @sa.event.listens_for(engine, "connect")
  def _connect(dbapi_conn, _):
    dbapi_conn.isolation_level = None
    # WAL + NORMAL: commits stay atomic and the file uncorrupted; only a power cut may lose the last ones.
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")

  @sa.event.listens_for(engine, "begin")
  def _begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE")

  engine.dispose()  # pooled connections made before the listeners existed


def _enable_wal(path: Path) -> None:
  """WAL mode (persistent; readers no longer block the writer). Retried by open_storage: the first switch
  needs the file to itself, and when workers start together SQLite may answer "database is locked" at
  once, without its busy wait (two connections escalating their locks: measured 2 in 240 openings of a
  fresh file by 6 threads at a time), which failed a CI run's two-worker sweep."""
  with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as conn:
    conn.execute("PRAGMA journal_mode=WAL")


def open_storage(url: str, heartbeat_interval: int = 20,
                 grace_period: int = 120) -> optuna.storages.RDBStorage:
  """The RDB storage at `url` (created if needed); raises LedgerError with one line on failure."""
  path = sqlite_path(url)
  engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
  if url.startswith("postgres"):
    engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails in seconds
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fs = _filesystem_type(path.resolve())
    if fs in _NETWORK_FS:
      print(f"[sweep] WARNING: the SQLite ledger {path} is on a network filesystem ({fs}); SQLite's locks "
            "are not reliable there: use one machine, or a PostgreSQL --storage URL", file=sys.stderr)
    try:
      retry(_enable_wal, path, _markers=_LOCKED)
    except sqlite3.Error as e:
      raise LedgerError(f"cannot open the SQLite ledger {path}: {e}") from None
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    try:
      # Retried here: lock contention, and the races of workers that create the schema at the same time
      # (the loser finds it made). An unreachable server fails at once, in one line.
      storage = retry(optuna.storages.RDBStorage, url, engine_kwargs=engine_kwargs,
                      heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                      _markers=_LOCKED + _CREATE_RACE)
    except ImportError:
      driver = "psycopg2-binary" if url.startswith("postgres") else "the database driver"
      raise LedgerError(f"cannot open the ledger {redact(url)}: install {driver} for this URL") from None
    except (sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ValueError) as e:
      text = str(getattr(e, "orig", None) or e).strip()
      first = text.splitlines()[0] if text else type(e).__name__
      raise LedgerError(f"cannot open the ledger {redact(url)}: {first}") from None
  if path is not None:
    _sqlite_immediate(storage.engine)
  retry(_METADATA.create_all, storage.engine, _markers=_LOCKED + _CREATE_RACE)
  return storage


class Ledger:
  """One study of the storage, with the operations the sweep needs (all retried on contention)."""

  def __init__(self, storage: optuna.storages.RDBStorage, study_name: str, directions: Sequence[str],
               worker: str | None = None):
    self.storage, self.study_name = storage, study_name
    self.worker = worker or worker_id()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      study = retry(optuna.create_study, storage=storage, study_name=study_name, directions=list(directions),
                    load_if_exists=True)
    self.study_id = study._study_id
    got = [d.name.lower() for d in storage.get_study_directions(self.study_id)]
    want = [d.lower() for d in directions]
    if got != want:
      raise LedgerError(f"study {study_name!r} optimises {got}, not {want}; use another --study name")

  # ------------------------------------------------------------------------------------------ reading

  def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
    return retry(self.storage.get_all_trials, self.study_id, deepcopy=False,
                 states=tuple(states) if states else None)

  def trial(self, trial_id: int) -> FrozenTrial:
    return retry(self.storage.get_trial, trial_id)

  def study_attrs(self) -> dict[str, Any]:
    return retry(self.storage.get_study_user_attrs, self.study_id)

  def set_study_attr(self, key: str, value: Any) -> None:
    retry(self.storage.set_study_user_attr, self.study_id, key, value)

  # ------------------------------------------------------------------------------------------ the lock

  @contextlib.contextmanager
  def lock(self, timeout_s: float = 600.0, name: str = "study") -> Iterator[None]:
    """The study's lease lock: held for short read-decide-write sections, never during training. Its lease
    is renewed while held (_renew), so it expires only when its holder died. Another `name` is another lock
    of the study (scheduler.setup's "calibrate", held while one worker calibrates)."""
    what = "the lock" if name == "study" else f"the {name} lock"
    name, engine = f"{name}:{self.study_name}", self.storage.engine
    deadline, delay = time.monotonic() + timeout_s, 0.02
    while True:
      now = time.time()
      try:
        with engine.begin() as conn:
          conn.execute(sa.delete(_LOCKS).where(_LOCKS.c.name == name, _LOCKS.c.expires < now))
          conn.execute(sa.insert(_LOCKS).values(name=name, holder=self.worker, expires=now + LOCK_LEASE_S))
        break
      except sa.exc.IntegrityError:
        pass  # held by another worker
      except sa.exc.OperationalError as e:
        if not _is_transient(e):
          raise
      if time.monotonic() > deadline:
        raise LedgerError(f"could not get {what} of study {self.study_name!r} in {timeout_s:.0f} s")
      time.sleep(delay)
      delay = min(delay * 1.5, 0.5)
    stop = threading.Event()
    renewer = threading.Thread(target=self._renew, args=(name, stop), name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
      yield
    finally:
      stop.set()
      renewer.join()

      def release():
        with engine.begin() as conn:
          conn.execute(sa.delete(_LOCKS).where(_LOCKS.c.name == name, _LOCKS.c.holder == self.worker))
      retry(release)

  def _renew(self, name: str, stop: threading.Event) -> None:
    """Pushes the lease of a held lock forward every quarter lease while its holder lives: the lease only
    frees the lock of a dead holder, and a live one may hold it past LOCK_LEASE_S (a slow ledger under
    contention, retried for up to RETRY_FOR_S) without a second worker deleting its row and entering too.
    A holder that dies stops renewing, and its row expires as before."""
    while not stop.wait(LOCK_LEASE_S / 4):
      try:
        with self.storage.engine.begin() as conn:
          kept = conn.execute(sa.update(_LOCKS).where(_LOCKS.c.name == name, _LOCKS.c.holder == self.worker)
                              .values(expires=time.time() + LOCK_LEASE_S)).rowcount
        if not kept:
          print(f"[sweep] WARNING: the lease of lock {name!r} expired while held (renewal too late)",
                file=sys.stderr)
          return
      except Exception as e:  # keep trying; a missed renewal only matters if the next ones miss too
        print(f"[sweep] renewing the lease of lock {name!r} failed: {type(e).__name__}: {e}", file=sys.stderr)

  # -------------------------------------------------------------------------------------- trial moves

  def add_waiting(self, params: dict[str, Any], distributions: dict[str, Any], user_attrs: dict[str, Any],
                  system_attrs: dict[str, Any]) -> int:
    """A new WAITING trial with fixed parameters (call with the lock held, after the duplicate check)."""
    template = optuna.trial.create_trial(
        state=TrialState.WAITING, params=params,
        distributions={k: distributions[k] for k in params}, user_attrs=user_attrs, system_attrs=system_attrs)
    return retry(self.storage.create_new_trial, self.study_id, template_trial=template)

  def claim(self, trial_id: int) -> FrozenTrial | None:
    """WAITING -> RUNNING for this worker, or None if another worker was first."""
    # The heartbeat row first: a trial must never be RUNNING without one (see module docstring).
    retry(self.storage.record_heartbeat, trial_id)
    try:
      if not retry(self.storage.set_trial_state_values, trial_id, TrialState.RUNNING):
        return None
    except optuna.exceptions.UpdateFinishedTrialError:
      return None
    t = self.trial(trial_id)
    retry(self.storage.set_trial_system_attr, trial_id, WORKER, self.worker)
    retry(self.storage.set_trial_system_attr, trial_id, ATTEMPTS, int(t.system_attrs.get(ATTEMPTS, 0)) + 1)
    return self.trial(trial_id)

  def requeue(self, trial_id: int, reason: str, max_attempts: int | None = None) -> str:
    """RUNNING -> WAITING (a preemption, not a failure); FAIL once its worker died max_attempts times.

    Returns "requeued", "failed" or "gone" (finished meanwhile).
    """
    t = self.trial(trial_id)
    if t.state != TrialState.RUNNING:
      return "gone"
    history = list(t.system_attrs.get(PREEMPTED, [])) + [
        {"worker": t.system_attrs.get(WORKER, "?"), "reason": reason, "at": time.time()}]
    # Only deaths count against a trial (a worker stopped politely is not the config's fault).
    deaths = sum(1 for h in history if h["reason"] == STALE)
    try:
      retry(self.storage.set_trial_system_attr, trial_id, PREEMPTED, history)
      if max_attempts is not None and deaths >= max_attempts:
        retry(self.storage.set_trial_user_attr, trial_id, "error",
              f"its worker died {deaths} times while training it (killed? out of memory?)")
        retry(self.storage.set_trial_state_values, trial_id, TrialState.FAIL)
        return "failed"
      retry(self.storage.set_trial_state_values, trial_id, TrialState.WAITING)
    except optuna.exceptions.UpdateFinishedTrialError:
      return "gone"
    return "requeued"

  def requeue_stale(self, max_attempts: int) -> list[tuple[int, str]]:
    """Requeues RUNNING trials whose heartbeat is older than the grace period (call with the lock held)."""
    out = []
    for trial_id in retry(self.storage._get_stale_trial_ids, self.study_id):
      number = self.trial(trial_id).number
      out.append((number, self.requeue(trial_id, STALE, max_attempts)))
    return out

  def owns(self, trial_id: int) -> bool:
    t = self.trial(trial_id)
    return t.state == TrialState.RUNNING and t.system_attrs.get(WORKER) == self.worker

  def finish(self, trial_id: int, state: TrialState, values: Sequence[float] | None,
             user_attrs: dict[str, Any]) -> bool:
    """Records the outcome if this worker still owns the trial (call with the lock held)."""
    if not self.owns(trial_id):
      return False
    for k, v in user_attrs.items():
      retry(self.storage.set_trial_user_attr, trial_id, k, v)
    try:
      return bool(retry(self.storage.set_trial_state_values, trial_id, state, values=values))
    except optuna.exceptions.UpdateFinishedTrialError:
      return False

  def pause(self, trial_id: int, user_attrs: dict[str, Any]) -> bool:
    """RUNNING -> WAITING after a rung, with the rung's results, if this worker still owns the trial (call
    with the lock held). A paused trial is claimed again only once promoted (scheduler.py)."""
    if not self.owns(trial_id):
      return False
    for k, v in user_attrs.items():
      retry(self.storage.set_trial_user_attr, trial_id, k, v)
    try:
      return bool(retry(self.storage.set_trial_state_values, trial_id, TrialState.WAITING))
    except optuna.exceptions.UpdateFinishedTrialError:
      return False

  def set_user_attr(self, trial_id: int, key: str, value: Any) -> None:
    retry(self.storage.set_trial_user_attr, trial_id, key, value)

  def set_metric_names(self, names: Sequence[str]) -> None:
    """Names of the study's objectives, so Optuna's plots and optuna-dashboard label them."""
    def name():
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.load_study(study_name=self.study_name, storage=self.storage).set_metric_names(list(names))
    retry(name)

  def report(self, trial_id: int, step: int, value: float) -> None:
    """One point of a trial's learning curve as an Optuna intermediate value (dashboards draw the curves).
    `Trial.report` refuses multi-objective studies; the storage call does not, and it is what it wraps."""
    if math.isfinite(value):
      retry(self.storage.set_trial_intermediate_value, trial_id, int(step), float(value))

  def set_system_attr(self, trial_id: int, key: str, value: Any) -> None:
    retry(self.storage.set_trial_system_attr, trial_id, key, value)

  @contextlib.contextmanager
  def heartbeat(self, trial_ids: Sequence[int]) -> Iterator[None]:
    """Records the trials' heartbeats every heartbeat_interval seconds while the body runs (one thread for
    all the trials a worker trains together)."""
    stop = threading.Event()
    interval = self.storage.heartbeat_interval or 20

    def beat():
      while not stop.wait(interval):
        for trial_id in trial_ids:
          try:
            retry(self.storage.record_heartbeat, trial_id)
          except Exception as e:  # keep beating; a missed beat only risks a needless requeue
            print(f"[sweep] heartbeat of trial {trial_id} failed: {type(e).__name__}: {e}", file=sys.stderr)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_ids[0]}", daemon=True)
    thread.start()
    try:
      yield
    finally:
      stop.set()
      thread.join()
