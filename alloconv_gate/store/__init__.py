"""Where the gate keeps its journal, redemptions, counters and grants (see :mod:`.base`).

``store`` option values:

- ``sqlite:///PATH`` (default ``sqlite:///alloconv_gate.sqlite3``): a relative PATH is
  taken from the ini file's folder; ``sqlite:////abs/path`` is absolute;
- ``redis://HOST:PORT/DB`` (and ``rediss://``): needs ``pip install alloconv_gate[redis]``;
- ``memory``: this process only, for tests.
"""

from __future__ import annotations

import os

from .base import OUTCOMES, PENDING, Attempt, Claim, Redemption, SetState, Store, StoreError

__all__ = [
    "OUTCOMES",
    "PENDING",
    "Attempt",
    "Claim",
    "Redemption",
    "SetState",
    "Store",
    "StoreError",
    "open_store",
    "resolve_store_url",
    "sqlite_path",
]

_SQLITE = "sqlite:///"
DEFAULT_STORE = _SQLITE + "alloconv_gate.sqlite3"


def resolve_store_url(url: str, here: str) -> str:
    """``url`` checked, with a relative sqlite path made absolute from ``here``.

    Raises ValueError saying what is wrong.
    """
    url = url.strip()
    if url == "memory":
        return url
    path = sqlite_path(url)
    if path is not None:
        if not path:
            raise ValueError(f"{url!r} names no file: sqlite:///PATH")
        return _SQLITE + os.path.normpath(os.path.join(here, path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return url
    raise ValueError(f"{url!r} is not sqlite:///PATH, redis://HOST:PORT/DB or memory")


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:///PATH`` URL names, or None for another kind of store."""
    return url[len(_SQLITE) :] if url.startswith(_SQLITE) else None


def open_store(url: str) -> Store:
    """Open the store a resolved URL names; raises StoreError when it cannot be used."""
    if url == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    path = sqlite_path(url)
    if path is not None:
        from .sqlite_store import SqliteStore

        return SqliteStore(path)
    from .redis_store import RedisStore

    return RedisStore(url)
