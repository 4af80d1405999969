"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

:class:`Transaction` extends this to several files: all replaced, or all left as they were.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# several files as one: the dataset store's commits


JOURNAL_NAME = ".transaction.json"
LOCK_NAME = ".lock"


@contextmanager
def locked(folder: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``folder`` (a ``.lock`` file in it); yields whether it
    was acquired (always True when ``blocking``). Serialises writers across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as fh:
        if fcntl is None:  # pragma: no cover - non-POSIX: no cross-process lock
            yield True
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Transaction:
    """Replace several files so that a failure or a crash leaves all of them as they were.

    ``stage_parquet`` writes each new file to a temporary beside its target. ``commit`` then
    hard-links every existing target to a backup, records the plan in a journal file in
    ``folder``, renames the temporaries onto their targets and finally removes the journal
    (the commit point) and the backups. An exception during the renames restores the backups;
    a crash (``kill -9``) leaves the journal, and :func:`recover` restores the old files the
    next time the folder is opened. Protects against process crashes, not power loss (no fsync).
    Callers hold :func:`locked` on ``folder`` around staging and committing.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.staged: list[tuple[Path, Path]] = []      # (temporary, target)
        self.created_dirs: list[Path] = []

    def stage_parquet(self, path: Path, table: pa.Table) -> None:
        """Write ``table`` to a temporary that ``commit`` will move onto ``path``."""
        self.stage_many([(path, table)])

    def stage_many(self, items: list[tuple[Path, pa.Table]], threads: int | None = None) -> None:
        """:meth:`stage_parquet` for many files, encoded in a few threads (Parquet writing
        releases the GIL); the first failure is raised after every thread has finished."""
        jobs = []
        for path, table in items:
            self._make_dirs(path.parent)
            tmp = _tmp_for(path)
            self.staged.append((tmp, path))
            jobs.append((tmp, table))

        def write(job: tuple[Path, pa.Table]) -> None:
            pq.write_table(job[1], job[0], compression="zstd", write_statistics=True)

        threads = min(4, os.cpu_count() or 1) if threads is None else threads
        if len(jobs) < 4 or threads <= 1:
            for job in jobs:
                write(job)
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="atomic-stage") as pool:
            futures = [pool.submit(write, job) for job in jobs]
        for future in futures:
            future.result()

    def commit(self) -> None:
        """Move every staged file onto its target, all or none."""
        entries = []
        try:
            for tmp, target in self.staged:
                backup = None
                if target.exists():
                    backup = target.with_name(f".{target.name}.{uuid.uuid4().hex}.bak")
                    os.link(target, backup)
                entries.append({"tmp": str(tmp), "target": str(target), "backup": None if backup is None else str(backup)})
            journal = {"entries": entries, "created_dirs": [str(d) for d in self.created_dirs]}
            write_text(self.folder / JOURNAL_NAME, json.dumps(journal))
            for tmp, target in self.staged:
                os.replace(tmp, target)
        except BaseException:
            _roll_back(entries, self.created_dirs)
            (self.folder / JOURNAL_NAME).unlink(missing_ok=True)
            self.abort()
            raise
        (self.folder / JOURNAL_NAME).unlink()
        for entry in entries:
            if entry["backup"]:
                Path(entry["backup"]).unlink(missing_ok=True)
        self.staged, self.created_dirs = [], []

    def abort(self) -> None:
        """Drop the staged temporaries and the folders made for them."""
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        _remove_empty(self.created_dirs)
        self.staged, self.created_dirs = [], []

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self.created_dirs.append(d)


def needs_recovery(folder: Path) -> bool:
    """Whether a crashed :class:`Transaction` left its journal in ``folder``."""
    return (Path(folder) / JOURNAL_NAME).exists()


def recover(folder: Path) -> bool:
    """Undo a crashed :class:`Transaction` in ``folder`` (call it holding :func:`locked`).
    Returns whether there was anything to undo."""
    path = Path(folder) / JOURNAL_NAME
    if not path.exists():
        return False
    try:
        journal = json.loads(path.read_text())
    except ValueError:  # the journal itself was cut short: no rename had started
        journal = {"entries": [], "created_dirs": []}
    _roll_back(journal["entries"], [Path(d) for d in journal["created_dirs"]])
    for entry in journal["entries"]:
        Path(entry["tmp"]).unlink(missing_ok=True)
    path.unlink()
    return True


def _roll_back(entries: list[dict], created_dirs: list[Path]) -> None:
    for entry in entries:
        target = Path(entry["target"])
        backup = entry["backup"]
        if backup and os.path.exists(backup):
            if os.path.exists(target) and os.path.samefile(backup, target):
                os.unlink(backup)          # never replaced (rename of a hard link to itself is a no-op)
            else:
                os.replace(backup, target)
        elif not backup:
            target.unlink(missing_ok=True)
    _remove_empty(created_dirs)


def _remove_empty(dirs: list[Path]) -> None:
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
