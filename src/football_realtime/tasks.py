"""Background loops: cancelling them reliably, and knowing when one is being cancelled."""

from __future__ import annotations

import asyncio
import contextlib


def cancelling() -> bool:
    """Whether the current task is being cancelled (redis-py may turn a cancellation
    during a read into a ConnectionError; the loops must not retry then)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background loop and wait for it, cancelling again if a library swallowed
    the first cancellation."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


__all__ = ["cancelling", "stop_task"]
