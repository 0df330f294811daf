"""Connection slots: who holds them, and whose slot a new connection takes when none is free.

A slot held by a connection that is not serving a request costs its holder nothing to give up, so a
slow or idle client can never lock others out::

    connection opens ──> WAITING (sending its request line and headers, or idle between
                           ^   │     keep-alive requests: may be closed to make room)
          response sent ───┘   └── headers complete ──> BUSY (its request is in the app: kept)

A new connection is admitted when a slot is free. When its client (an IP address) already holds
``per_client`` slots, it takes the slot of that client's own longest-waiting connection; when the
server holds ``total`` slots, it takes the longest-waiting connection of the client that holds the
most slots. Only when those connections are all busy is the new one refused.

Longest-waiting means: longest since the connection last finished a request (or opened). An idle
connection that has just answered is the one its client is about to reuse, and closing it could race
that client's next request; an attacker's keep-alive left idle, or headers trickled in a byte at a
time, have waited longest and go first.

A connection whose next request has already arrived (bytes not yet read, as when the server accepts
a burst of connections before it reads) is passed over: ``admit``'s ``evictable`` says so.

On loopback every client is 127.0.0.1: then the per-client cap makes room from the same client's
waiting connections, which never refuses a client that sends whole requests promptly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

# How many of a client's longest-waiting connections are offered to ``evictable``, and how many of the
# clients holding most slots are tried, before a new connection is refused: bounds the work per admission.
LOOK_AHEAD = 8
CLIENTS_TRIED = 4


def _any(_connection: object) -> bool:
    return True


@dataclass(frozen=True)
class Admission(Generic[C]):
    """The answer to a new connection: in or not, and which connection to close to make room."""

    admitted: bool
    evict: C | None = None
    full: str = ""  # when refused: "client" (its own cap) or "server"


class Slots(Generic[C]):
    """The slots of one server; every method is O(1) but admission at a full server (O(clients))."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._client: dict[C, str] = {}  # every connection holding a slot -> its client
        self._held: dict[str, int] = {}  # client -> slots held
        # client -> its waiting connections, longest-waiting first (dicts keep insertion order)
        self._waiting: dict[str, dict[C, None]] = {}

    def __len__(self) -> int:
        return len(self._client)

    def held_by(self, client: str) -> int:
        return self._held.get(client, 0)

    def admit(self, connection: C, client: str, evictable: Callable[[C], bool] = _any) -> Admission[C]:
        """Give ``connection`` a slot (as WAITING), closing another's if needed; or refuse it.
        ``evictable`` is False for a waiting connection that must not be closed (its request has come)."""
        evict: C | None = None
        if self.held_by(client) >= self.per_client:
            evict = self._longest_waiting(client, evictable)
            if evict is None:
                return Admission(False, full="client")
        elif len(self._client) >= self.total:
            evict = self._victim(evictable)
            if evict is None:
                return Admission(False, full="server")
        if evict is not None:
            self.release(evict)
        self._client[connection] = client
        self._held[client] = self.held_by(client) + 1
        self._waiting.setdefault(client, {})[connection] = None
        return Admission(True, evict)

    def busy(self, connection: C) -> None:
        """Its headers are complete: the request is in the app, and the slot is kept until it answers."""
        client = self._client.get(connection)
        if client is not None:
            self._discard_waiting(connection, client)

    def waiting(self, connection: C) -> None:
        """Its response is sent: idle, and now the most recently active of its client's connections."""
        client = self._client.get(connection)
        if client is not None:
            self._discard_waiting(connection, client)
            self._waiting.setdefault(client, {})[connection] = None

    def release(self, connection: C) -> None:
        """The connection is gone (closed, refused or evicted): its slot is free."""
        client = self._client.pop(connection, None)
        if client is None:
            return
        self._discard_waiting(connection, client)
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]

    def _discard_waiting(self, connection: C, client: str) -> None:
        waiting = self._waiting.get(client)
        if waiting is not None:
            waiting.pop(connection, None)
            if not waiting:
                del self._waiting[client]

    def _longest_waiting(self, client: str, evictable: Callable[[C], bool]) -> C | None:
        for n, connection in enumerate(self._waiting.get(client, ())):
            if n == LOOK_AHEAD:
                break
            if evictable(connection):
                return connection
        return None

    def _victim(self, evictable: Callable[[C], bool]) -> C | None:
        """The longest-waiting connection of the client that holds the most slots and has one waiting."""
        for client in sorted(self._waiting, key=self.held_by, reverse=True)[:CLIENTS_TRIED]:
            connection = self._longest_waiting(client, evictable)
            if connection is not None:
                return connection
        return None
