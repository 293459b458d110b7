"""``redis+sentinel://`` URLs: parsing, the factory, and redaction in `config` output."""

from __future__ import annotations

import pytest

from football_realtime.brokers import MemoryBroker, create_broker
from football_realtime.brokers.redis import RedisBroker
from football_realtime.brokers.sentinel import parse_sentinel_url
from football_realtime.cli import redact_url
from football_realtime.publisher import Publisher


def test_parse_full_url() -> None:
    t = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,s2,[::1]:26381/mymaster/3"
        "?sentinel_password=spw&sentinel_username=sent"
    )
    assert t.sentinels == (("10.0.0.1", 26380), ("s2", 26379), ("::1", 26381))
    assert (t.master_name, t.db) == ("mymaster", 3)
    assert (t.username, t.password) == ("app", "p@ss")
    assert (t.sentinel_username, t.sentinel_password) == ("sent", "spw")


def test_parse_minimal_url_defaults() -> None:
    t = parse_sentinel_url("redis+sentinel://:secret@127.0.0.1:26379/frt")
    assert t.db == 0 and t.username is None and t.password == "secret"
    assert t.sentinel_password is None  # URL credentials are for the master only


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no master name
        "redis+sentinel:///frt",  # no sentinel
        "redis+sentinel://h:port/frt",
        "redis+sentinel://h:1/frt/zero",
        "redis+sentinel://h:1/frt/0/extra",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


async def test_factory_and_publisher_take_the_scheme() -> None:
    url = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/frt/0"
    broker = create_broker(url, history_size=10, history_ttl=10, min_replicas=1)
    assert isinstance(broker, RedisBroker)
    assert broker.name == "redis-sentinel" and broker.min_replicas == 1
    await broker.stop()
    async with Publisher(url) as pub:
        assert isinstance(pub.broker, RedisBroker)
    assert isinstance(create_broker("memory://", history_size=1, history_ttl=1), MemoryBroker)
    with pytest.raises(ValueError, match="MIN_REPLICAS needs a Redis broker"):
        create_broker("memory://", history_size=1, history_ttl=1, min_replicas=1)


def test_config_output_redacts_both_passwords() -> None:
    assert (
        redact_url("redis+sentinel://u:pw@h1:1,h2:2/frt/0?sentinel_password=spw&x=1")
        == "redis+sentinel://u:***@h1:1,h2:2/frt/0?sentinel_password=***&x=1"
    )
    assert redact_url("redis://:secret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
