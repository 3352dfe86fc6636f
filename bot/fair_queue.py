"""A few threads for blocking calls, shared fairly: waiting callers take turns by key.

The bot runs every question through one of these so that the event loop never blocks and one
user's burst of questions does not hold up everyone else.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_WAITING = 500  # calls queued beyond this are refused (Busy)


class Busy(Exception):
    """Too many questions are already waiting."""


class FairQueue:
    """Runs blocking calls on a few threads. Waiting callers take turns by key (the user), so
    one user's burst does not hold up anyone else: a newcomer goes next, not last."""

    def __init__(self, workers: int, max_waiting: int = MAX_WAITING):
        self.workers, self.max_waiting = max(1, workers), max_waiting
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="citebot-ask")
        self._running = 0
        self._waiting: dict[Hashable, deque[asyncio.Future]] = {}  # in order of arrival
        self._turns: Counter = Counter()  # calls started per key while the pool has been busy

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    async def run(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self._running < self.workers and not self._waiting:
            self._running += 1
            self._turns[key] += 1
        else:
            await self._wait_turn(key, loop)
        try:
            return await loop.run_in_executor(self._executor, fn)
        finally:
            self._hand_over()

    async def _wait_turn(self, key: Hashable, loop: asyncio.AbstractEventLoop) -> None:
        if self.waiting >= self.max_waiting:
            raise Busy
        if key not in self._waiting:  # no banked credit: start level with those waiting
            floor = min((self._turns[k] for k in self._waiting), default=self._turns[key])
            self._turns[key] = max(self._turns[key], floor)
        turn = loop.create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # the slot was ours already: pass it on
            else:
                queue = self._waiting.get(key)
                if queue and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[key]
            raise

    def _hand_over(self) -> None:
        """A call finished: give its thread to the waiting key with the fewest turns; among
        equals, the one with the fewest waiting (a newcomer), then the earliest."""
        key = min(self._waiting, key=lambda k: (self._turns[k], len(self._waiting[k])),
                  default=None)
        if key is None:
            self._running -= 1
            if not self._running:
                self._turns.clear()
            return
        queue = self._waiting[key]
        turn = queue.popleft()
        if not queue:
            del self._waiting[key]
        self._turns[key] += 1
        turn.set_result(None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
