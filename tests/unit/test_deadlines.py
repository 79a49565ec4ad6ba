"""Deadlines: one timer for every call in flight, each cancelled past its own deadline."""

from __future__ import annotations

import asyncio
import contextlib

from batchgate.actions.deadlines import Deadlines


async def watched(deadlines: Deadlines, timeout_s: float, work: asyncio.Future[None]) -> str:
    call = deadlines.start(timeout_s)
    try:
        await work
        return "finished"
    except asyncio.CancelledError:
        if not deadlines.finish(call):
            raise
        return "timed out"
    finally:
        deadlines.finish(call)


async def test_each_call_is_stopped_at_its_own_deadline_and_no_sooner() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    soon = loop.create_future()
    late = asyncio.create_task(watched(deadlines, 0.3, loop.create_future()))
    early = asyncio.create_task(watched(deadlines, 0.05, loop.create_future()))
    quick = asyncio.create_task(watched(deadlines, 0.05, soon))
    soon.set_result(None)
    assert await quick == "finished"
    assert await early == "timed out"
    assert not late.done()  # its deadline is later: the timer was set again for it
    assert await late == "timed out"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_task_past_its_deadline_goes_on_once_the_cancel_is_taken_back() -> None:
    deadlines = Deadlines()

    async def two_calls() -> list[str]:
        first = await watched(deadlines, 0.02, asyncio.get_running_loop().create_future())
        await asyncio.sleep(0.01)  # would raise if the deadline's cancel were still pending
        return [first, await watched(deadlines, 5, asyncio.sleep(0))]  # type: ignore[arg-type]

    assert await two_calls() == ["timed out", "finished"]


async def test_a_cancel_from_elsewhere_is_not_taken_for_a_deadline() -> None:
    deadlines = Deadlines()
    task = asyncio.create_task(watched(deadlines, 5, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    deadlines.close()


def test_deadlines_work_on_every_loop_they_meet() -> None:
    deadlines = Deadlines()

    async def one() -> str:
        return await watched(deadlines, 0.02, asyncio.get_running_loop().create_future())

    # The first loop ends with its timer set for a later call's deadline; the second needs its own.
    async def first() -> str:
        lingering = asyncio.create_task(watched(deadlines, 60, asyncio.get_running_loop().create_future()))
        result = await one()
        lingering.cancel()
        return result

    assert asyncio.run(first()) == "timed out"
    assert asyncio.run(one()) == "timed out"
