"""The server secret that keys owner digests (service/api/auth.py: HMAC of each API key).

SERVICE_OWNER_SECRET wins when set. Otherwise the secret lives in `<data_dir>/owner_secret`,
generated on first use. Either way the HMAC key is the secret's text as UTF-8, so the file's
content can be copied into SERVICE_OWNER_SECRET (or the reverse) without changing any digest.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from service.config import Settings

log = logging.getLogger("service.owner_secret")

SECRET_FILE_NAME = "owner_secret"


class UnusableSecret(RuntimeError):
    """The secret file exists but holds nothing usable: refuse to start rather than re-key."""


def secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / SECRET_FILE_NAME


def load_owner_secret(settings: Settings) -> bytes:
    if settings.owner_secret:
        return settings.owner_secret.encode()
    path = secret_path(settings)
    try:
        return _read(path)
    except FileNotFoundError:
        return _create(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if not text:
        # Generating a new one would silently orphan every job: its owner would no longer match.
        raise UnusableSecret(f"the owner secret file {path} is empty; restore it or remove it")
    return text.encode()


def _create(path: Path) -> bytes:
    """Write a fresh secret unless another process got there first; either way, the one on
    disk. The secret is written in full to a private temporary file and then hard-linked into
    place: the link fails if the name exists, so two processes starting at once agree on one
    secret, and no reader ever sees a half-written file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".owner_secret.")  # 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read(path)
    finally:
        os.unlink(temporary)
    log.warning(
        "generated a new owner secret in %s (it keys the digests that record which API key owns "
        "each job; keep it, and keep it private). API replicas on several machines must share "
        "it: give each the same SERVICE_OWNER_SECRET (this file's content) or the same file",
        path,
    )
    return _read(path)
