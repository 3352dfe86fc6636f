"""bot/fair_queue.py: blocking calls on a few threads, taken in turns by key."""

from __future__ import annotations

import asyncio
import time

from bot.fair_queue import FairQueue


def test_fair_queue_lets_a_newcomer_go_before_a_burst():
    order: list[str] = []

    def job(name: str) -> str:
        time.sleep(0.01)
        order.append(name)
        return name

    async def main() -> list[str]:
        q = FairQueue(workers=1)
        burst = [asyncio.create_task(q.run("a", lambda i=i: job(f"a{i}"))) for i in range(20)]
        await asyncio.sleep(0.03)
        late = asyncio.create_task(q.run("b", lambda: job("b")))
        await asyncio.gather(*burst, late)
        q.close()
        return order

    order = asyncio.run(main())
    assert len(order) == 21 and order.index("b") <= 5


def test_fair_queue_survives_cancelled_callers():
    async def main() -> str:
        q = FairQueue(workers=1)
        running = asyncio.create_task(q.run("a", lambda: time.sleep(0.05)))
        waiting = [asyncio.create_task(q.run("b", lambda: "never")) for _ in range(3)]
        await asyncio.sleep(0.01)
        for task in waiting:
            task.cancel()
        await running
        result = await asyncio.wait_for(q.run("c", lambda: "ran"), 5)
        assert q.waiting == 0 and q._running == 0
        q.close()
        return result

    assert asyncio.run(main()) == "ran"
