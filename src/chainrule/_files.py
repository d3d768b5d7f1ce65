"""Writing a file so that a reader, or a crash, never sees half of it."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

try:  # POSIX: a writer's lock on its temporary file tells a live write from a dead one
    import fcntl
except ImportError:  # Windows: stale temporaries are left alone
    fcntl = None  # type: ignore[assignment]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary file beside it:
    flushed and fsync'ed, then renamed over ``path`` and the directory fsync'ed. Readers
    see the old file or the new one, never a mix; on an error the temporary is removed.

    A process killed while writing (SIGKILL, a power cut) leaves its temporary behind:
    the next write of ``path`` removes such stale temporaries (see
    ``remove_stale_temporaries``)."""
    remove_stale_temporaries(path)
    # Same directory, so os.replace is a rename within one file system (atomic).
    # os.open with 0o666 lets the umask set the permissions, as for a plain open().
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                # Held until the file is closed, after the rename, or until this process
                # dies: the kernel releases it even on SIGKILL.
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            if fcntl is not None:
                os.replace(tmp, path)
        if fcntl is None:  # (Windows cannot rename a file that is open)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries that writes of ``path`` left behind when their process
    died; returns them.

    A temporary is stale when no process holds its lock: every writer locks its own
    from creation until after the rename, so one that another process is still writing
    (the same file written concurrently) is never touched. An empty one is left too:
    it may be a write that has created its file and not yet locked it.
    """
    if fcntl is None or not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{16}}\.tmp")
    removed = []
    for candidate in path.parent.iterdir():
        if not pattern.fullmatch(candidate.name):
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:  # gone meanwhile (its write finished)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            continue
        try:
            if os.fstat(fd).st_size > 0:
                os.unlink(candidate)
                removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Not possible on every platform (Windows cannot open a
    directory), where the rename is still atomic, only not yet flushed."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
