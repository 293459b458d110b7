"""Runs a :class:`Simulation` against a clock and publishes what it produces."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .clock import Clock
from .publishers import Publisher, PublishError
from .simulation import Simulation

log = logging.getLogger("football_realtime.demo")


class Runner:
    """One simulated minute per ``config.seconds_per_minute`` real seconds.

    A late tick runs at once (catching up); when the simulator is more than
    ``resync_after`` seconds behind it stops trying and continues from now, and the
    system service reports the lag either way. Events that fail to publish are dropped
    and counted; the next successful publish is followed by a ``system_alert`` naming
    how many were lost.
    """

    def __init__(
        self,
        sim: Simulation,
        publisher: Publisher,
        clock: Clock,
        *,
        resync_after: float = 30.0,
    ) -> None:
        self.sim = sim
        self.publisher = publisher
        self.clock = clock
        self.resync_after = resync_after
        self.published = 0
        self.lost = 0
        self._unreported_lost = 0
        self._last_error = ""
        self.ticks = 0
        self.stopping = False

    def stop(self) -> None:
        """Ask :meth:`run` to return after the event it is publishing."""
        self.stopping = True

    async def run(self, max_ticks: int | None = None) -> None:
        spm = self.sim.config.seconds_per_minute
        await self._publish_all(self.sim.start())
        origin = self.clock.monotonic()
        while (max_ticks is None or self.ticks < max_ticks) and not self.stopping:
            due = origin + (self.ticks + 1) * spm
            delay = due - self.clock.monotonic()
            if delay > 0:
                await self.clock.sleep(delay)
            else:
                await asyncio.sleep(0)  # let the service breathe while catching up
            lag = max(0.0, self.clock.monotonic() - due)
            if lag > self.resync_after:
                log.warning("simulator %.1fs behind; skipping ahead", lag)
                origin += lag
            self.ticks += 1
            await self._publish_all(self.sim.step(lag))

    async def _publish_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if self.stopping:
                return
            await self._publish(event)

    async def _publish(self, event: dict[str, Any]) -> None:
        try:
            await self.publisher.publish(event)
        except PublishError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a client library turned our cancellation into a connection error
                raise asyncio.CancelledError from exc
            if self._unreported_lost == 0:
                log.warning("publishing failed (events are dropped until it works): %s", exc)
            self.lost += 1
            self._unreported_lost += 1
            self._last_error = str(exc)
            return
        self.published += 1
        if self._unreported_lost:
            lost, self._unreported_lost = self._unreported_lost, 0
            log.warning("publishing works again; %d events were lost", lost)
            await self._publish(self.sim.system.publish_failures(lost, self._last_error))

    def stats(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "published": self.published,
            "lost": self.lost,
            "minute": self.sim.minute,
        }
