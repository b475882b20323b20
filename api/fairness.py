"""Deficit round robin: how the API's writer shares its rounds between apps.

Requests queue per app (in arrival order within an app); the apps take turns. On its turn
an app is credited ``quantum`` items and its requests go while they fit in its credit; what
it did not spend is kept for its next turn (so a request bigger than the quantum goes after
a few turns), and is forgotten when its queue empties (an idle app saves nothing up). This
is Shreedhar and Varghese's deficit round robin (SIGCOMM 1995), by item count: over time
each app with work waiting gets the same number of notifications into the rounds, however
many requests it queued, and a request of a second app waits for at most one turn of each
other app, not for every request queued before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DeficitRoundRobin(Generic[K]):
    """Chooses each round from keyed queues; keeps the turn order and credits across rounds."""

    def __init__(self, quantum: int) -> None:
        self.quantum = max(1, quantum)
        self._turns: dict[K, int] = {}  # key -> credit left, in turn order (front goes next)
        self._credited: K | None = None  # the front key, when its turn's credit is given

    def pick(self, queued: Sequence[tuple[K, int]], limit: int) -> list[int]:
        """The positions in ``queued`` (``(key, weight)`` in arrival order) of the requests
        that form the next round: at most ``limit`` in weight, but for its first request.

        A round that fills up mid-turn ends there, and that key's turn goes on next round.
        """
        per_key: dict[K, deque[int]] = {}
        for position, (key, _) in enumerate(queued):
            per_key.setdefault(key, deque()).append(position)
        # keys with nothing queued leave the turns (and lose their credit); new ones join last
        self._turns = {k: credit for k, credit in self._turns.items() if k in per_key}
        for key in per_key:
            self._turns.setdefault(key, 0)
        if self._credited not in self._turns:
            self._credited = None
        chosen: list[int] = []
        size = 0
        while self._turns:
            key = next(iter(self._turns))
            if self._credited != key:
                self._turns[key] += self.quantum
                self._credited = key
            waiting = per_key[key]
            while waiting:
                weight = queued[waiting[0]][1]
                if chosen and size + weight > limit:
                    return sorted(chosen)  # the round is full: this key's turn goes on
                if weight > self._turns[key]:
                    break  # not enough credit: its next turn
                chosen.append(waiting.popleft())
                size += weight
                self._turns[key] -= weight
            credit = self._turns.pop(key)
            self._credited = None
            if waiting:
                self._turns[key] = credit  # to the back of the turn order
        return sorted(chosen)
