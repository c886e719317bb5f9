"""Where the sandbox keeps contacts and events: plain dicts, or SQLite with ``--db``.

Semantics (the same in both stores):

- a contact is ``_user_id`` -> attributes; an upsert merges shallowly into what is stored
  and a ``null`` value removes the attribute [ours: API.md leaves nulls undocumented];
- an event is stored once per ``_event_id`` (the caller checks :meth:`has_event` first);
  events keep their arrival order;
- deleting a contact also erases its events [ours: the delete endpoint serves erasure
  requests, so nothing of the person should remain].

The stores are not thread-safe on their own: :class:`~importer.sandbox.app.SandboxApp`
serialises every call with one lock (requests run on the server's thread, the Python hooks
on the test's). :meth:`transaction` groups one request's writes into one SQLite commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

import orjson

Record = dict[str, Any]


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[object]: ...
    def upsert_contact(self, user_id: str, attributes: Record) -> None: ...
    def get_contact(self, user_id: str) -> Record | None: ...
    def has_contact(self, user_id: str) -> bool: ...
    def delete_contact(self, user_id: str) -> bool: ...
    def has_event(self, event_id: str) -> bool: ...
    def add_event(self, event: Record) -> None: ...
    def events(self, user_id: str | None = None) -> list[Record]: ...
    def counts(self) -> tuple[int, int]: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


def _merge(stored: Record, update: Record) -> None:
    for key, value in update.items():
        if value is None:
            stored.pop(key, None)
        else:
            stored[key] = value


class MemoryStore:
    """Dicts: the default, fast enough that the importer is always the bottleneck."""

    def __init__(self) -> None:
        self._contacts: dict[str, Record] = {}
        self._events: dict[str, Record] = {}
        self._events_by_user: dict[str, list[str]] = {}

    def transaction(self) -> AbstractContextManager[object]:
        return nullcontext()

    def upsert_contact(self, user_id: str, attributes: Record) -> None:
        stored = self._contacts.get(user_id)
        if stored is None:
            stored = self._contacts[user_id] = dict(attributes)
        else:
            stored.update(attributes)
        if None in stored.values():  # rare: only an explicit null clears an attribute
            for key in [k for k, v in stored.items() if v is None]:
                del stored[key]
        stored["_user_id"] = user_id

    def get_contact(self, user_id: str) -> Record | None:
        stored = self._contacts.get(user_id)
        return dict(stored) if stored is not None else None

    def has_contact(self, user_id: str) -> bool:
        return user_id in self._contacts

    def delete_contact(self, user_id: str) -> bool:
        if self._contacts.pop(user_id, None) is None:
            return False
        for event_id in self._events_by_user.pop(user_id, ()):
            self._events.pop(event_id, None)
        return True

    def has_event(self, event_id: str) -> bool:
        return event_id in self._events

    def add_event(self, event: Record) -> None:
        event_id = event["_event_id"]
        self._events[event_id] = event
        self._events_by_user.setdefault(event["_user_id"], []).append(event_id)

    def events(self, user_id: str | None = None) -> list[Record]:
        if user_id is None:
            return [dict(e) for e in self._events.values()]
        return [dict(self._events[i]) for i in self._events_by_user.get(user_id, ())]

    def counts(self) -> tuple[int, int]:
        return len(self._contacts), len(self._events)

    def clear(self) -> None:
        self._contacts.clear()
        self._events.clear()
        self._events_by_user.clear()

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (user_id TEXT PRIMARY KEY, attributes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
"""


class SqliteStore:
    """One SQLite file in WAL mode; survives restarts, slower than :class:`MemoryStore`."""

    def __init__(self, path: str) -> None:
        # The app's lock serialises access, so the connection may be used from the server's
        # thread and from the test's thread.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = 0

    @contextmanager
    def _transaction(self) -> Iterator[object]:
        if self._depth:
            yield self
            return
        self._depth += 1
        self._db.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth -= 1

    def transaction(self) -> AbstractContextManager[object]:
        return self._transaction()

    def upsert_contact(self, user_id: str, attributes: Record) -> None:
        stored = self.get_contact(user_id) or {}
        _merge(stored, attributes)
        stored["_user_id"] = user_id
        self._db.execute(
            "INSERT INTO contacts (user_id, attributes) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET attributes = excluded.attributes",
            (user_id, orjson.dumps(stored).decode()),
        )

    def get_contact(self, user_id: str) -> Record | None:
        row = self._db.execute(
            "SELECT attributes FROM contacts WHERE user_id = ?", (user_id,)
        ).fetchone()
        if row is None:
            return None
        found: Record = orjson.loads(row[0])
        return found

    def has_contact(self, user_id: str) -> bool:
        sql = "SELECT 1 FROM contacts WHERE user_id = ?"
        return self._db.execute(sql, (user_id,)).fetchone() is not None

    def delete_contact(self, user_id: str) -> bool:
        with self._transaction():
            gone = self._db.execute("DELETE FROM contacts WHERE user_id = ?", (user_id,))
            if gone.rowcount:
                self._db.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            return gone.rowcount > 0

    def has_event(self, event_id: str) -> bool:
        sql = "SELECT 1 FROM events WHERE event_id = ?"
        return self._db.execute(sql, (event_id,)).fetchone() is not None

    def add_event(self, event: Record) -> None:
        self._db.execute(
            "INSERT INTO events (event_id, user_id, body) VALUES (?, ?, ?)",
            (event["_event_id"], event["_user_id"], orjson.dumps(event).decode()),
        )

    def events(self, user_id: str | None = None) -> list[Record]:
        if user_id is None:
            rows = self._db.execute("SELECT body FROM events ORDER BY seq")
        else:
            rows = self._db.execute(
                "SELECT body FROM events WHERE user_id = ? ORDER BY seq", (user_id,)
            )
        return [orjson.loads(body) for (body,) in rows]

    def counts(self) -> tuple[int, int]:
        (contacts,) = self._db.execute("SELECT COUNT(*) FROM contacts").fetchone()
        (events,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(contacts), int(events)

    def clear(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM contacts")
            self._db.execute("DELETE FROM events")

    def close(self) -> None:
        self._db.close()


def open_store(db_path: str | None) -> Store:
    """A :class:`SqliteStore` on ``db_path``, or a fresh :class:`MemoryStore` when None."""
    return SqliteStore(db_path) if db_path else MemoryStore()
