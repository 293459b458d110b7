"""The seed's own Python client (section Python客户端) works unchanged."""

from __future__ import annotations

import asyncio
import json

import websockets

from ..support import SEED_PREDICTION, RunningServer, post_broadcast, token


async def test_seed_python_client_receives_broadcast(any_server: RunningServer) -> None:
    # The seed's query parameters; a premium token, since the free tier (anonymous
    # default) receives neither expected_value nor strategy.
    uri = any_server.ws_url + "?user_id=user123&token=" + token("user123")
    received: list[dict] = []

    async def websocket_client() -> None:
        # Verbatim from the seed, with the loop bounded for the test.
        async with websockets.connect(uri) as websocket:
            subscribe_msg = {
                "type": "subscribe",
                "data": {
                    "subscription_type": "predictions",
                    "filters": {"min_confidence": 0.7},
                },
            }
            await websocket.send(json.dumps(subscribe_msg))
            while True:
                message = await websocket.recv()
                event = json.loads(message)
                received.append(event)
                if event["event_type"] == "prediction_created":
                    return

    task = asyncio.create_task(websocket_client())
    # Publish only once the subscription is acknowledged (polled: the seed's loop is opaque).
    deadline = asyncio.get_running_loop().time() + 5
    while not any(e["event_type"] == "message_ack" for e in received):
        assert asyncio.get_running_loop().time() < deadline, received
        await asyncio.sleep(0.01)
    event = {"event_type": "prediction_created", "data": SEED_PREDICTION}
    low = {**event, "data": {**event["data"], "prediction_id": 124, "confidence": 0.5}}
    r = await asyncio.to_thread(post_broadcast, any_server, low)
    assert r.status_code == 200, r.text
    r = await asyncio.to_thread(post_broadcast, any_server, event)
    assert r.status_code == 200, r.text
    await asyncio.wait_for(task, 5)
    kinds = [e["event_type"] for e in received]
    assert kinds[0] == "connection_status"
    assert "message_ack" in kinds
    preds = [e for e in received if e["event_type"] == "prediction_created"]
    # The 0.5-confidence prediction was filtered out; the 0.75 one arrived intact.
    assert len(preds) == 1
    assert preds[0]["data"] == event["data"]
    assert preds[0]["stream"] == "predictions"
    assert preds[0]["offset"] == 2
    assert preds[0]["timestamp"].endswith("Z")
