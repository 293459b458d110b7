"""Redis Sentinel: failover with publishing in flight, and REALTIME_REDIS_MIN_REPLICAS.

Real processes only: a Sentinel set (1 master, 2 replicas, 3 sentinels with
down-after-milliseconds 1000 and failover-timeout 5000; tests/redis_sentinel.py),
`football-realtime serve` instances on its ``redis+sentinel://`` URL, the standalone
``Publisher`` and the Python client, all on free loopback ports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from football_realtime.brokers import BrokerUnavailable, PublishedEvent
from football_realtime.brokers.redis import RedisBroker
from football_realtime.brokers.redis_layout import stream_keys
from football_realtime.client import Event, RealtimeClient, RecoveryFailed
from football_realtime.core.events import SubscriptionType
from football_realtime.publisher import Publisher

from ..client_support import FAST, score
from ..cluster_support import Follower, instances
from ..redis_sentinel import SentinelSet
from ..redis_server import RedisServer
from ..support import TIMEOUT

pytestmark = pytest.mark.timeout(60)

#: Publishing must resume this soon after the master's SIGKILL (Sentinel's detection,
#: 1 s down-after, election, promotion and the clients' reconnect included).
RESUME_WITHIN = 10.0
M = SubscriptionType.MATCHES


class Collector:
    """Everything a RealtimeClient yields, gathered by a background task."""

    def __init__(self, client: RealtimeClient) -> None:
        self.items: list[Any] = []
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: RealtimeClient) -> None:
        async for item in client:
            self.items.append(item)

    def events(self) -> list[Event[Any]]:
        return [it for it in self.items if isinstance(it, Event) and it.offset is not None]

    def failures(self) -> list[RecoveryFailed]:
        return [it for it in self.items if isinstance(it, RecoveryFailed)]

    async def wait(self, cond: Any, timeout: float = TIMEOUT * 2) -> None:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110 - filled by the collector task
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_failover_with_publishing_in_flight_loses_no_acknowledged_event() -> None:
    with (
        SentinelSet() as sentinels,
        instances(["x"], sentinels.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        async with (
            Publisher(sentinels.url(), min_replicas=1) as pub,
            RealtimeClient(x.ws_url, **FAST) as client,
        ):
            await client.subscribe("matches", match_ids=[1])
            got = Collector(client)
            acked: list[tuple[int, int]] = []  # (seq, offset)
            retried_ok: list[float] = []  # when a publish that had failed succeeded
            failures = 0

            async def publisher(total: int) -> None:
                nonlocal failures
                for seq in range(total):
                    failed = False
                    while True:
                        try:
                            res = await pub.publish(score(1, home=seq), idempotency_key=f"s{seq}")
                            break
                        except BrokerUnavailable:
                            failed = True
                            failures += 1
                            await asyncio.sleep(0.05)
                    if failed:
                        retried_ok.append(time.monotonic())
                    acked.append((seq, res.offset))

            total = 200
            task = asyncio.create_task(publisher(total))
            async with asyncio.timeout(TIMEOUT):
                while len(acked) < 60:  # noqa: ASYNC110 - filled by the publisher task
                    await asyncio.sleep(0.005)
            old = await asyncio.to_thread(sentinels.kill_master)  # mid-stream
            killed_at = sentinels.killed_at
            assert killed_at is not None
            new = await asyncio.to_thread(sentinels.wait_new_master, old)
            assert new != old
            await asyncio.wait_for(task, RESUME_WITHIN + TIMEOUT)
            assert failures > 0 and retried_ok, "the kill did not interrupt publishing"
            resumed_after = retried_ok[0] - killed_at
            print(f"failover: publishing resumed {resumed_after:.2f} s after the kill")
            assert resumed_after < RESUME_WITHIN

            # Offsets: one per event, gapless, in publish order (idempotent retries kept
            # each event at one offset).
            assert [o for _, o in acked] == list(range(acked[0][1], acked[0][1] + total))
            await got.wait(lambda: len(got.events()) >= total)
            await asyncio.sleep(0.2)  # nothing more may arrive
            events = got.events()
            assert [e.data.home_score for e in events] == list(range(total))
            assert [e.offset for e in events] == [o for _, o in acked]
            assert got.failures() == []
            await got.stop()
        health = x.get("/realtime/health").json()
        assert health["broker_healthy"] is True and health["broker"] == "redis-sentinel"


async def test_min_replicas_refuses_a_publish_no_replica_acknowledges() -> None:
    with (
        SentinelSet() as sentinels,
        instances(["x"], sentinels.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        f = Follower("matches")
        await f.connect(x.ws_url)
        r = await asyncio.to_thread(x.broadcast, score(1, home=0))
        assert r.status_code == 200, r.text
        await f.wait_offset("matches", r.json()["offset"])

        await asyncio.to_thread(sentinels.stop_replicas)  # SIGSTOP: they answer nothing
        try:
            t0 = time.monotonic()
            r = await asyncio.to_thread(x.broadcast, score(1, home=1), **{"Idempotency-Key": "k1"})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            detail = r.json()["detail"]
            assert "only 0 of 1 replicas acknowledged" in detail, detail
            assert time.monotonic() - t0 < 1.0 + TIMEOUT
            # The refused event is not delivered while no replica holds it.
            await asyncio.sleep(0.3)
            assert f.offsets("matches") == [1]
        finally:
            await asyncio.to_thread(sentinels.resume_replicas)
        # The retry with the same key is answered once a replica holds the event: the
        # original offset, delivered exactly once.
        deadline = time.monotonic() + TIMEOUT * 2
        while True:
            r = await asyncio.to_thread(x.broadcast, score(1, home=1), **{"Idempotency-Key": "k1"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.json()["offset"] == 2 and r.json()["duplicate"] is True
        await f.wait_offset("matches", 2)
        r = await asyncio.to_thread(x.broadcast, score(1, home=2))
        assert r.status_code == 200 and r.json()["offset"] == 3, r.text
        await f.wait_offset("matches", 3)
        assert f.offsets("matches") == [1, 2, 3]
        assert [e["data"]["home_score"] for e in f.events] == [0, 1, 2]
        assert not f.close_codes
        await f.close()


async def test_manual_failover_demoting_a_live_master_is_followed() -> None:
    """``SENTINEL FAILOVER``: the old master stays up as a replica (it still answers
    reads); publishing and delivery move to the new master, nothing lost or reset."""
    with SentinelSet() as sentinels:
        node = RedisBroker(sentinels.url(), history_size=100, history_ttl=60, min_replicas=1)
        got: list[PublishedEvent] = []
        resets: list[SubscriptionType] = []
        await node.start(got.append, lambda st, epoch: resets.append(st))
        try:

            async def publish(seq: int) -> int:
                async with asyncio.timeout(RESUME_WITHIN):
                    while True:
                        try:
                            res = await node.publish(score(1, home=seq), M, f"m{seq}")
                            return res.offset
                        except BrokerUnavailable:
                            await asyncio.sleep(0.05)

            offsets = [await publish(seq) for seq in range(3)]
            old = await asyncio.to_thread(sentinels.manual_failover)
            new = await asyncio.to_thread(sentinels.wait_new_master, old)
            assert new != old
            offsets += [await publish(seq) for seq in range(3, 6)]
            assert offsets == [1, 2, 3, 4, 5, 6]
            async with asyncio.timeout(TIMEOUT * 2):
                while len(got) < 6:  # noqa: ASYNC110 - filled by the reader task
                    await asyncio.sleep(0.02)
            assert [e.offset for e in got] == [1, 2, 3, 4, 5, 6]
            assert [e.data["home_score"] for e in got] == list(range(6))
            assert resets == []
            # The reader left the demoted master: a publish now arrives promptly.
            await publish(6)
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 7:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            await node.stop()


# A failover to a replica that lacked the newest writes, after which new publishes
# reused the lost offsets: the stream's counter is back where the reader was, so only
# the entry's write id (``n``) shows that offset 5 is not the event this instance
# delivered. Done in one script, so the reader cannot resync half-way.
_REUSE_OFFSETS = """
local entries = redis.call('XRANGE', KEYS[2], '-', '+')
redis.call('DEL', KEYS[2])
for i, entry in ipairs(entries) do
  local f = entry[2]
  local n = f[8]
  if i > tonumber(ARGV[1]) then n = 'another-write-' .. i end
  redis.call('XADD', KEYS[2], entry[1], f[1], f[2], f[3], f[4], f[5], f[6], 'n', n)
end
return #entries
"""


async def test_resync_rotates_the_epoch_when_a_failover_reused_delivered_offsets() -> None:
    with RedisServer() as srv:
        node = RedisBroker(srv.url, history_size=100, history_ttl=60)
        got: list[PublishedEvent] = []
        resets: list[tuple[SubscriptionType, str | None]] = []
        await node.start(got.append, lambda st, epoch: resets.append((st, epoch)))
        try:
            results = [await node.publish(score(1, home=i), M, None) for i in range(5)]
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 5:  # noqa: ASYNC110 - filled by the reader task
                    await asyncio.sleep(0.01)
            meta, log_key, _ = stream_keys(M)
            client = redis.Redis(host="127.0.0.1", port=srv.port)
            assert client.eval(_REUSE_OFFSETS, 2, meta, log_key, 3) == 5
            assert client.hget(meta, "offset") == b"5"  # the counter did not go back
            async with asyncio.timeout(TIMEOUT):  # the next idle-second resync notices
                while not resets:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            (stream, epoch), *_ = resets
            assert stream == M and epoch is not None and epoch != results[0].epoch
            assert (await node.position(M))[0] == epoch
        finally:
            await node.stop()


async def test_lossy_failover_with_min_replicas_0_tells_every_subscriber() -> None:
    """MIN_REPLICAS=0: events the promoted replica never got are lost, and their
    offsets are handed out again; the subscriber that saw them is told (a
    ``recovered: false`` / RecoveryFailed), never left with a silent gap."""
    with SentinelSet() as sentinels, instances(["x"], sentinels.url()) as (x,):
        async with (
            Publisher(sentinels.url()) as pub,
            RealtimeClient(x.ws_url, **FAST) as client,
        ):
            await client.subscribe("matches", match_ids=[1])
            got = Collector(client)

            async def publish(seq: int) -> None:
                deadline = time.monotonic() + RESUME_WITHIN + TIMEOUT
                while True:
                    try:
                        await pub.publish(score(1, home=seq), idempotency_key=f"l{seq}")
                        return
                    except BrokerUnavailable:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)

            for seq in range(3):
                await publish(seq)
            await asyncio.to_thread(sentinels.cut_replicas)
            try:
                for seq in range(3, 6):  # acknowledged by the master alone
                    await publish(seq)
                await got.wait(lambda: len(got.events()) == 6)
                old = await asyncio.to_thread(sentinels.kill_master)
            finally:
                await asyncio.to_thread(sentinels.resume_replicas)
            await asyncio.to_thread(sentinels.wait_new_master, old)
            for seq in range(6, 9):  # offsets 4..6 again, under the old epoch at first
                await publish(seq)
            await got.wait(lambda: bool(got.failures()))
            await publish(9)
            await got.wait(lambda: any(e.data.home_score == 9 for e in got.events()))
            seen = [
                "lost" if isinstance(it, RecoveryFailed) else it.data.home_score
                for it in got.items
                if isinstance(it, RecoveryFailed) or (isinstance(it, Event) and it.offset)
            ]
            assert seen[:6] == [0, 1, 2, 3, 4, 5]
            assert seen[6] == "lost", seen  # told before anything of the new history
            after = [s for s in seen[7:] if s != "lost"]
            assert after == sorted(after) and after[-1] == 9, seen
            await got.stop()


async def test_position_names_the_epoch_this_instance_delivers_under() -> None:
    """The soak's silent gap: after a failover another instance rotated the epoch while
    this instance's reader still delivered the old one. A client subscribing here was
    positioned under the new epoch (Redis's), got the old epoch's last events (events
    carry no epoch), was spared by the reset (it had "subscribed under the new epoch
    already"), and dropped the new epoch's events at the same offsets as duplicates,
    without ``recovered: false``. position() must name the epoch the reader delivers
    under: when Redis has moved on, it waits for the reader to adopt the new epoch
    (which resets the old epoch's subscribers) before answering."""
    with RedisServer() as srv:
        node = RedisBroker(srv.url, history_size=100, history_ttl=60)
        got: list[PublishedEvent] = []
        resets: list[tuple[SubscriptionType, str | None]] = []
        await node.start(got.append, lambda st, epoch: resets.append((st, epoch)))
        try:
            for i in range(5):
                await node.publish(score(1, home=i), M, None)
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 5:  # noqa: ASYNC110 - filled by the reader task
                    await asyncio.sleep(0.01)
            # Another instance's resync rotated the epoch (as _ENSURE does when a
            # failover lost delivered offsets), keeping the counter; our reader is
            # blocked in its XREAD and has not noticed yet.
            meta, log_key, _ = stream_keys(M)
            client = redis.Redis(host="127.0.0.1", port=srv.port)
            client.hset(meta, mapping={"epoch": "rotated-elsewhere", "offset": 3})
            client.delete(log_key)
            epoch, offset = await node.position(M)
            assert (epoch, offset) == ("rotated-elsewhere", 3)
            # Whoever subscribed under the old epoch has been told (reset) before a
            # client can be positioned under the new one.
            assert resets == [(M, "rotated-elsewhere")]
            # From here on the reader delivers the new epoch from its first offset.
            res = await node.publish(score(1, home=9), M, None)
            assert (res.epoch, res.offset) == ("rotated-elsewhere", 4)
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 6:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert got[-1].offset == 4 and got[-1].data["home_score"] == 9
        finally:
            await node.stop()


async def test_position_never_names_an_offset_no_reader_delivered() -> None:
    """A publish whose WAIT failed still took an offset on the master; no reader
    delivers it (min_replicas), so no resync would notice if a failover lost it, and
    the next publish would reuse the offset. A subscriber positioned at that offset
    would drop that acknowledged event as already covered. position() therefore names
    only an offset this instance delivered: here it refuses (the client retries)."""
    with RedisServer() as srv:  # no replica: no WAIT succeeds
        node = RedisBroker(srv.url, history_size=100, history_ttl=60, min_replicas=1)
        got: list[PublishedEvent] = []
        await node.start(got.append)
        try:
            assert (await node.position(M))[1] == 0
            with pytest.raises(BrokerUnavailable, match="replicas acknowledged"):
                await node.publish(score(1, home=1), M, None)
            meta, _, _ = stream_keys(M)
            client = redis.Redis(host="127.0.0.1", port=srv.port)
            assert client.hget(meta, "offset") == b"1"  # taken on the master
            with pytest.raises(BrokerUnavailable, match="not delivered"):
                await node.position(M)
            assert got == []
        finally:
            await node.stop()


async def test_no_old_epoch_event_reaches_a_subscriber_of_the_new_epoch() -> None:
    """The soak's silent gap, end to end on real processes. This instance's reader holds
    old-epoch events it cannot deliver yet (MIN_REPLICAS=1, the replicas stopped); in
    the meantime another instance's resync rotated the epoch (a failover had lost those
    offsets) keeping the counter, so the new epoch reuses the offsets. A client that
    subscribes now must not be positioned under the new epoch and then be handed the
    old epoch's events: the client (events carry no epoch) would take them as the new
    epoch's and drop the new epoch's events at the same offsets as duplicates, and the
    reset would spare it (it had "subscribed under the new epoch already")."""
    with (
        SentinelSet() as sentinels,
        instances(["x"], sentinels.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        old = Follower("matches")
        await old.connect(x.ws_url)
        for i in range(5):
            r = await asyncio.to_thread(x.broadcast, score(1, home=i))
            assert r.status_code == 200, r.text
        await old.wait_offset("matches", 5)
        epoch = old.positions["matches"]["epoch"]

        await asyncio.to_thread(sentinels.stop_replicas)
        resumed = False
        try:
            for i in range(5, 8):  # written on the master (offsets 6-8), not acknowledged
                r = await asyncio.to_thread(x.broadcast, score(1, home=i))
                assert r.status_code == 503, r.text
            # Another instance's resync rotates the epoch, keeping the counter at 5.
            meta, log_key, _ = stream_keys(M)
            client = redis.Redis(host="127.0.0.1", port=sentinels.master_port())
            client.hset(meta, mapping={"epoch": "rotated", "offset": 5})
            client.delete(log_key)
            new = Follower("matches")
            joining = asyncio.create_task(new.connect(x.ws_url))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(sentinels.resume_replicas)
            resumed = True
            try:
                result = await joining
            except ConnectionError:  # reset while subscribing (4002): reconnect
                new = Follower("matches")
                result = await new.connect(x.ws_url)
        finally:
            if not resumed:
                await asyncio.to_thread(sentinels.resume_replicas)
        assert result["streams"]["matches"]["epoch"] == "rotated"
        for i in range(100, 103):  # the new epoch's offsets 6-8
            r = await asyncio.to_thread(x.broadcast, score(1, home=i))
            assert r.status_code == 200, r.text
            assert (r.json()["epoch"], r.json()["offset"]) == ("rotated", i - 94)
        deadline = time.monotonic() + TIMEOUT
        while sum(e["data"]["home_score"] >= 100 for e in new.events) < 3:
            assert time.monotonic() < deadline, new.events
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # nothing more may arrive
        # Only the new epoch's events, each offset once.
        assert [(e["offset"], e["data"]["home_score"]) for e in new.events] == [
            (6, 100),
            (7, 101),
            (8, 102),
        ]
        # The old epoch's subscriber was told to reconnect (recovered: false follows).
        assert await old.wait_closed() == 4002 and epoch != "rotated"
        await new.close()
