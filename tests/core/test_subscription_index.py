"""The subscription index agrees with a brute-force reference matcher (property test)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from football_realtime.core.events import EVENT_STREAM, STREAM_EVENT_TYPES, EventType
from football_realtime.core.subscriptions import (
    EventAttributes,
    Subscription,
    SubscriptionFilter,
    SubscriptionIndex,
    effective_event_types,
)

PUBLISHABLE = sorted(EVENT_STREAM, key=lambda e: e.value)
MATCHES = [1, 2, 3, 4]
LEAGUES = ["英超", "西甲", "意甲"]


def reference_match(
    sub_type: Any, flt: dict[str, Any], event_type: EventType, data: dict[str, Any]
) -> bool:
    """The filter semantics written out plainly, independent of the index."""
    if sub_type is not None and event_type not in STREAM_EVENT_TYPES[sub_type]:
        return False
    if flt.get("event_types") is not None and event_type not in flt["event_types"]:
        return False
    if flt.get("match_ids") is not None:
        m = data.get("match_id")
        if not (type(m) is int and m in flt["match_ids"]):
            return False
    if flt.get("leagues") is not None:
        lg = data.get("league")
        if not (type(lg) is str and lg in flt["leagues"]):
            return False
    if flt.get("min_confidence") is not None:
        c = data.get("confidence")
        if not (type(c) in (int, float) and c >= flt["min_confidence"]):
            return False
    return True


def filters() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "match_ids": st.lists(st.sampled_from(MATCHES), min_size=1, max_size=3, unique=True),
            "leagues": st.lists(st.sampled_from(LEAGUES), min_size=1, max_size=2, unique=True),
            "min_confidence": st.sampled_from([0.0, 0.5, 0.7, 0.75, 1.0]),
            "event_types": st.lists(
                st.sampled_from(PUBLISHABLE), min_size=1, max_size=4, unique=True
            ),
        },
    )


sub_specs = st.tuples(st.sampled_from([None, *STREAM_EVENT_TYPES]), filters())

events = st.tuples(
    st.sampled_from(PUBLISHABLE),
    st.fixed_dictionaries(
        {},
        optional={
            "match_id": st.one_of(st.sampled_from([*MATCHES, 99]), st.just("1"), st.none()),
            "league": st.one_of(st.sampled_from([*LEAGUES, "中超"]), st.just(3)),
            "confidence": st.one_of(
                st.sampled_from([0.0, 0.49, 0.5, 0.7, 0.75, 0.99, 1.0, 1]), st.just("0.9")
            ),
        },
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(sub_specs, min_size=0, max_size=25),
    st.lists(events, min_size=1, max_size=10),
    st.data(),
)
def test_index_matches_reference(specs: list[Any], evs: list[Any], data: st.DataObject) -> None:
    index = SubscriptionIndex()
    subs: list[tuple[Subscription, Any, dict[str, Any]]] = []
    for i, (sub_type, flt) in enumerate(specs):
        if sub_type is None and "event_types" not in flt:
            continue
        if sub_type is not None and "event_types" in flt:
            # keep only types of that stream; an empty result is not a valid filter
            flt = {
                **flt,
                "event_types": [e for e in flt["event_types"] if EVENT_STREAM[e] == sub_type],
            }
            if not flt["event_types"]:
                del flt["event_types"]
        f = SubscriptionFilter.model_validate(flt)
        sub = Subscription(f"s{i}", object(), sub_type, effective_event_types(sub_type, f), f)
        index.add(sub)
        subs.append((sub, sub_type, flt))
    # remove a random subset, so removal is exercised too
    removed = data.draw(st.sets(st.integers(0, max(len(subs) - 1, 0))))
    live = []
    for i, entry in enumerate(subs):
        if i in removed:
            index.remove(entry[0])
        else:
            live.append(entry)
    assert len(index) == len(live)
    for event_type, payload in evs:
        got = list(index.match(EventAttributes.of(event_type, payload)))
        assert len(got) == len({id(s) for s in got}), "a subscription was yielded twice"
        expected = {id(s) for s, t, f in live if reference_match(t, f, event_type, payload)}
        assert {id(s) for s in got} == expected
        for s, _, _ in live:
            assert s.matches(EventAttributes.of(event_type, payload)) == (id(s) in expected)
