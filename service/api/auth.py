"""Bearer-token authentication and who may see what.

Keys come from SERVICE_API_KEYS (comma-separated) and/or SERVICE_API_KEYS_FILE (one per line);
SERVICE_ADMIN_KEYS are keys that see every job. A job belongs to the key that submitted it,
recorded as an HMAC of the key under the server's owner secret (service/owner_secret.py): the
key itself is never stored or logged, and without the secret a guessed key cannot be checked
against the stored digests. Another key asking for that job gets 404, not 403, so ids do not
leak.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings
from service.errors import Unauthorized
from service.owner_secret import load_owner_secret


@dataclass(frozen=True)
class Principal:
    owner: str  # the key's owner digest; "" when authentication is off
    admin: bool

    def can_see(self, owner: str) -> bool:
        return self.admin or owner == self.owner

    @property
    def owner_filter(self) -> str | None:
        """The owner to filter on, or None for everything."""
        return None if self.admin else self.owner


ANONYMOUS = Principal(owner="", admin=True)


def owner_digest(secret: bytes, key: str) -> str:
    """What a job records as its owner: 64 hex characters, the width of the owner column."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def legacy_owner_digest(key: str) -> str:
    """The unkeyed digest older versions stored; only service/storage/migrate.py still needs it."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ConfiguredKeys:
    keys: list[str]  # every key, admin keys included, each once
    admin: list[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfiguredKeys:
        keys = _split(settings.api_keys)
        if settings.api_keys_file:
            keys += _split(Path(settings.api_keys_file).read_text())
        admin = _split(settings.admin_keys)
        return cls(list(dict.fromkeys([*keys, *admin])), admin)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class KeyRing:
    def __init__(self, keys: list[str], admin_keys: list[str], secret: bytes) -> None:
        self._admin = set(admin_keys)
        # Digests are compared, not keys: equal-length inputs keep compare_digest honest.
        self._entries = [
            (hashlib.sha256(k.encode()).digest(), owner_digest(secret, k), k in self._admin)
            for k in dict.fromkeys([*keys, *admin_keys])
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        configured = ConfiguredKeys.from_settings(settings)
        # Without keys nothing is digested: no secret is needed, so none is read or generated.
        secret = load_owner_secret(settings) if configured.keys else b""
        return cls(configured.keys, configured.admin, secret)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def summary(self) -> str:
        admins = sum(1 for *_, admin in self._entries if admin)
        return f"{len(self._entries)} API key(s), {admins} admin"

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        offered = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        for digest, owner, admin in self._entries:  # every entry, match or not: constant time
            if hmac.compare_digest(digest, offered):
                found = Principal(owner=owner, admin=admin)
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found
