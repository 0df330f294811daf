"""Connection slots alone (no server): whose slot a new connection takes, and when it is refused."""

from __future__ import annotations

from sentemb.server.slots import Slots


def test_a_free_slot_admits_without_evicting():
    slots: Slots[str] = Slots(total=2, per_client=2)
    assert slots.admit("a", "1.1.1.1").admitted and slots.admit("b", "2.2.2.2").evict is None
    assert len(slots) == 2


def test_a_full_server_evicts_the_longest_waiting_of_the_client_holding_most():
    slots: Slots[str] = Slots(total=4, per_client=4)
    for name, client in [("a1", "A"), ("b1", "B"), ("b2", "B"), ("b3", "B")]:
        slots.admit(name, client)
    slots.busy("b1")
    slots.waiting("b1")  # b1 answered a request: now B's most recently active
    admission = slots.admit("c1", "C")
    assert admission.admitted and admission.evict == "b2"
    assert slots.held_by("B") == 2 and len(slots) == 4


def test_busy_connections_are_never_evicted():
    slots: Slots[str] = Slots(total=2, per_client=2)
    slots.admit("a1", "A")
    slots.admit("b1", "B")
    slots.busy("a1")
    assert slots.admit("c1", "C").evict == "b1"  # A holds as many, but its connection is serving
    slots.busy("c1")
    admission = slots.admit("d1", "D")
    assert not admission.admitted and admission.full == "server"


def test_a_client_at_its_cap_makes_room_from_its_own_connections():
    slots: Slots[str] = Slots(total=10, per_client=2)
    slots.admit("a1", "A")
    slots.admit("a2", "A")
    slots.admit("b1", "B")
    assert slots.admit("a3", "A").evict == "a1"
    slots.busy("a2")
    slots.busy("a3")
    admission = slots.admit("a4", "A")
    assert not admission.admitted and admission.full == "client"
    assert slots.admit("b2", "B").admitted  # another client is not affected


def test_release_frees_the_slot_and_is_idempotent():
    slots: Slots[str] = Slots(total=1, per_client=1)
    slots.admit("a1", "A")
    slots.busy("a1")
    assert not slots.admit("b1", "B").admitted
    slots.release("a1")
    slots.release("a1")
    slots.release("never-admitted")
    assert slots.admit("b1", "B").admitted and len(slots) == 1 and slots.held_by("A") == 0


def test_a_connection_whose_request_has_arrived_is_passed_over():
    slots: Slots[str] = Slots(total=3, per_client=3)
    for name in ("a1", "a2", "a3"):
        slots.admit(name, "A")
    assert slots.admit("a4", "A", evictable=lambda c: c != "a1").evict == "a2"  # a1's bytes are unread
    refused = slots.admit("b1", "B", evictable=lambda c: False)
    assert not refused.admitted and refused.full == "server"
