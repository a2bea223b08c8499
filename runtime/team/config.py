"""The team server's configuration file: users with hashed bearer tokens, and request limits.

The file is JSON (written 0600):

    {"users": {"alice": {"key_id": "3f9c…", "hash": "scrypt$16384$8$1$<salt hex>$<hex>"}},
     "limits": {"max_body_bytes": 1048576, "max_tokens": 512, ...}}

A token reads `clsp-<key_id>-<secret>`: the key id (not secret) finds the user without trying
every hash, and only an scrypt hash of the whole token is stored, so the file alone does not let
anyone in. Verification compares digests with `hmac.compare_digest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "clsp"
# scrypt cost: ~16 MB and tens of ms once per token; successes are then remembered in memory.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
_VERIFIED_MEMO = 1024


class ConfigError(Exception):
    """The configuration file is unreadable or malformed."""


@dataclass(frozen=True)
class Limits:
    """What one request and one user may ask of the server."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # per request
    requests_per_minute: int = 600  # per user
    max_concurrent: int = 4  # per user: queued plus running
    max_queue: int = 64  # all users together


@dataclass(frozen=True)
class User:
    """One token holder."""

    name: str
    key_id: str
    hash: str


@dataclass
class ServerConfig:
    """Users and limits, as read from (and written to) the configuration file."""

    users: dict[str, User] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None) -> ServerConfig:
        """Read `path`; a missing file is an empty configuration (no users, default limits)."""
        if path is None or not path.exists():
            return cls(path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: cannot read the configuration: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        users = {}
        for name, entry in (data.get("users") or {}).items():
            if not isinstance(entry, dict) or not {"key_id", "hash"} <= entry.keys():
                raise ConfigError(f"{path}: user {name!r} needs key_id and hash")
            users[name] = User(name, str(entry["key_id"]), str(entry["hash"]))
        known = {f.name for f in dataclasses.fields(Limits)}
        raw_limits = data.get("limits") or {}
        unknown = sorted(set(raw_limits) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown limits {', '.join(unknown)}")
        if not all(isinstance(v, int) and v > 0 for v in raw_limits.values()):
            raise ConfigError(f"{path}: limits must be positive integers")
        return cls(users, Limits(**raw_limits), path)

    def save(self) -> None:
        """Write the file atomically, readable by its owner only."""
        if self.path is None:
            raise ConfigError("no configuration path to save to")
        data: dict[str, Any] = {
            "users": {u.name: {"key_id": u.key_id, "hash": u.hash} for u in self.users.values()},
            "limits": dataclasses.asdict(self.limits),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        os.replace(tmp, self.path)

    def add_token(self, name: str) -> str:
        """Give `name` a new token (replacing any old one) and return it; call `save` after."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"user name {name!r}: use letters, digits, '-', '_' or '.'")
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}-{key_id}-{secrets.token_urlsafe(32)}"
        self.users[name] = User(name, key_id, hash_token(token))
        return token

    @property
    def auth_required(self) -> bool:
        """Whether any token exists: then every route but /health needs one."""
        return bool(self.users)


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/coder-lsp/server.json`, else `~/.config/coder-lsp/server.json`."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "coder-lsp" / "server.json"


def hash_token(token: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$digest` of `token`, with a fresh random salt unless one is given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = _scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """The 32-byte scrypt digest of `token` with cost parameters (n, r, p)."""
    return hashlib.scrypt(
        token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * 2, dklen=32
    )


def token_matches(token: str, stored: str) -> bool:
    """Whether `token` hashes to `stored` (constant-time comparison of the digests)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(token, bytes.fromhex(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, bytes.fromhex(digest))
    except ValueError:
        return False


class Authenticator:
    """Bearer token -> user name, remembering tokens already verified (by their sha256)."""

    def __init__(self, config: ServerConfig) -> None:
        self.by_key = {user.key_id: user for user in config.users.values()}
        self._verified: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def user_for(self, token: str) -> str | None:
        """The user holding `token`, or None for an unknown or wrong token."""
        fingerprint = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            known = self._verified.get(fingerprint)
        if known is not None:
            return known
        parts = token.split("-", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        user = self.by_key.get(parts[1])
        if user is None or not token_matches(token, user.hash):
            return None
        with self._lock:
            if len(self._verified) >= _VERIFIED_MEMO:
                self._verified.clear()
            self._verified[fingerprint] = user.name
        return user.name
