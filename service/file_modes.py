"""The service's files hold every job's training data, every model and the owner secret: they
are for the service's own user only.

Every command sets a private umask first, so what it creates is 0600 (files) or 0700 (folders).
Files from before that (an older version, a database copied in) are tightened at start-up: the
data folder, and for SQLite the database, its -wal/-shm/-journal files and its folder.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from service.config import Settings
from service.owner_secret import secret_path

log = logging.getLogger("service.file_modes")

PRIVATE_UMASK = 0o077
GROUP_AND_OTHERS = 0o077
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def use_private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a SQLite URL; None for another database or an in-memory one."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def tighten_existing(settings: Settings) -> list[Path]:
    """Take group and other permissions off the service's existing files and folders; the
    paths changed (each is logged)."""
    folders = [Path(settings.data_dir)]
    files = [secret_path(settings)]
    database = sqlite_path(settings.database_url)
    if database is not None:
        folders.append(database.parent)
        files += [database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)]
    changed = [path for path in dict.fromkeys([*folders, *files]) if _tighten(path)]
    return changed


def _tighten(path: Path) -> bool:
    try:
        status = path.stat()
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(status.st_mode)
    if not mode & GROUP_AND_OTHERS:
        return False
    if stat.S_ISDIR(status.st_mode) and _shared_folder(path, status):
        # Closing /tmp or a home folder would break other programs: only say what is exposed.
        log.warning(
            "%s is readable by other users (mode %o) and shared, so it is left as it is; keep "
            "the service's files in a folder of their own (SERVICE_DATA_DIR, the database URL)",
            path,
            mode,
        )
        return False
    try:
        path.chmod(mode & ~GROUP_AND_OTHERS)
    except OSError as exc:  # not ours, or a read-only file system
        log.warning("could not make %s private (mode %o): %s", path, mode, exc)
        return False
    log.info("made %s private: mode %o -> %o", path, mode, mode & ~GROUP_AND_OTHERS)
    return True


def _shared_folder(path: Path, status: os.stat_result) -> bool:
    sticky = bool(status.st_mode & stat.S_ISVTX)  # /tmp and the like
    resolved = path.resolve()
    return (
        sticky
        or status.st_uid != os.geteuid()
        or resolved == Path(os.path.expanduser("~")).resolve()
        or resolved == Path(resolved.anchor)
    )
