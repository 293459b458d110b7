"""Builds deploy/grafana/football-realtime.json (Grafana dashboard over docs/operations.md's
metrics). Edit here, then run ``python deploy/grafana/build_dashboard.py``; a test
checks the JSON is this script's output and queries only exported series."""

import json
from pathlib import Path

OUT = Path(__file__).with_name("football-realtime.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{job=~"$job"}'


def sel(extra=""):
    inner = 'job=~"$job"' + ("," + extra if extra else "")
    return "{" + inner + "}"


R = "$__rate_interval"
LE0 = sel('le="0.0"')
LE64K = sel('le="65536.0"')
panels = []
pid = [0]


def nid():
    pid[0] += 1
    return pid[0]


y = [0]


def row(title):
    panels.append(
        {
            "type": "row",
            "title": title,
            "id": nid(),
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]},
            "panels": [],
        }
    )
    y[0] += 1


x = [0]


def ts(title, targets, unit="short", w=8, h=8, desc="", stack=False):
    if x[0] + w > 24:
        x[0] = 0
        y[0] += h
    p = {
        "type": "timeseries",
        "title": title,
        "id": nid(),
        "datasource": DS,
        "description": desc,
        "gridPos": {"h": h, "w": w, "x": x[0], "y": y[0]},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
            for i, (e, legend) in enumerate(targets)
        ],
    }
    panels.append(p)
    x[0] += w


def stat(title, expr, unit="short", w=6, desc=""):
    if x[0] + w > 24:
        x[0] = 0
        y[0] += 4
    panels.append(
        {
            "type": "stat",
            "title": title,
            "id": nid(),
            "datasource": DS,
            "description": desc,
            "gridPos": {"h": 4, "w": w, "x": x[0], "y": y[0]},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"]},
                "colorMode": "value",
                "graphMode": "area",
            },
            "targets": [{"refId": "A", "expr": expr, "datasource": DS}],
        }
    )
    x[0] += w


def newrow(title, h=8):
    x[0] = 0
    y[0] += h
    row(title)


def q(p, metric, by=""):
    b = f"le{',' + by if by else ''}"
    return f"histogram_quantile({p}, sum by ({b}) (rate({metric}_bucket{sel()}[{R}])))"


row("Overview")
stat("Active connections", f"sum(realtime_connections_active{SEL})")
stat("Deliveries / s", f"sum(rate(realtime_messages_delivered_total{SEL}[{R}]))", "ops")
stat("Publish-to-write p99", q(0.99, "realtime_delivery_latency_seconds"), "s")
stat(
    "Client errors / message",
    f"sum(rate(realtime_errors_total{SEL}[{R}])) / clamp_min(sum(rate(realtime_messages_received_total{SEL}[{R}])) + sum(rate(realtime_messages_sent_total{SEL}[{R}])), 1)",
    "percentunit",
    desc="The seed's error rate: errors answered to clients per message handled.",
)
newrow("Connections", 4)
ts(
    "Active connections",
    [
        (f"sum by (instance) (realtime_connections_active{SEL})", "{{instance}}"),
        (f"sum(realtime_connections_active{SEL})", "total"),
    ],
)
ts(
    "Connects and disconnects / s",
    [
        (f"sum(rate(realtime_connections_opened_total{SEL}[{R}]))", "opened"),
        (f"sum(rate(realtime_connections_closed_total{SEL}[{R}]))", "closed"),
    ],
    "ops",
)
ts(
    "Closes by code / s",
    [(f"sum by (code) (rate(realtime_connections_closed_total{SEL}[{R}]))", "{{code}}")],
    "ops",
    desc="4001 slow consumer, 1012 restart/drain, 1013 capacity, 45xx terminal (auth, limits). See docs/protocol.md.",
)
ts(
    "Connection duration",
    [
        (q(0.5, "realtime_connection_duration_seconds"), "p50"),
        (q(0.95, "realtime_connection_duration_seconds"), "p95"),
        (
            f"sum(rate(realtime_connection_duration_seconds_sum{SEL}[{R}])) / sum(rate(realtime_connection_duration_seconds_count{SEL}[{R}]))",
            "mean",
        ),
    ],
    "s",
)
ts(
    "Users, subscriptions, rooms",
    [
        (f"sum(realtime_users_active{SEL})", "users"),
        (f"sum(realtime_subscriptions_active{SEL})", "subscriptions"),
        (f"sum(realtime_rooms_active{SEL})", "rooms"),
    ],
)
newrow("Messages")
ts(
    "Delivered / s by event type",
    [
        (
            f"sum by (event_type) (rate(realtime_messages_delivered_total{SEL}[{R}]))",
            "{{event_type}}",
        )
    ],
    "ops",
    stack=True,
)
ts(
    "Published / s by event type",
    [(f"sum by (event_type) (rate(realtime_events_published_total{SEL}[{R}]))", "{{event_type}}")],
    "ops",
    stack=True,
)
ts(
    "Client messages / s by type",
    [(f"sum by (type) (rate(realtime_messages_received_total{SEL}[{R}]))", "{{type}}")],
    "ops",
    stack=True,
)
ts(
    "Publish-to-write latency",
    [
        (q(0.5, "realtime_delivery_latency_seconds"), "p50"),
        (q(0.95, "realtime_delivery_latency_seconds"), "p95"),
        (q(0.99, "realtime_delivery_latency_seconds"), "p99"),
    ],
    "s",
    desc="End of an instance's fan-out minus the event's publish time (clock of the publishing instance).",
)
ts(
    "p99 latency by event type",
    [(q(0.99, "realtime_delivery_latency_seconds", "event_type"), "{{event_type}}")],
    "s",
)
ts(
    "Message size",
    [
        (q(0.5, "realtime_message_size_bytes", "direction"), "p50 {{direction}}"),
        (q(0.95, "realtime_message_size_bytes", "direction"), "p95 {{direction}}"),
    ],
    "bytes",
)
ts(
    "Bandwidth",
    [
        (f"sum(rate(realtime_sent_bytes_total{SEL}[{R}]))", "out"),
        (f"sum(rate(realtime_received_bytes_total{SEL}[{R}]))", "in"),
    ],
    "Bps",
)
ts(
    "Errors / s by code",
    [(f"sum by (code) (rate(realtime_errors_total{SEL}[{R}]))", "{{code}}")],
    "ops",
)
ts(
    "Events consumed from the broker / s",
    [(f"sum by (instance) (rate(realtime_events_consumed_total{SEL}[{R}]))", "{{instance}}")],
    "ops",
)
newrow("Slow consumers and queues")
ts(
    "Largest outbound queue vs limit",
    [
        (f"max(realtime_outbound_queue_bytes_max{SEL})", "largest queue"),
        (f"max(realtime_outbound_queue_limit_bytes{SEL})", "limit"),
    ],
    "bytes",
)
ts(
    "Connections with queued bytes",
    [
        (
            f"sum(realtime_outbound_queue_bytes_gcount{SEL}) - sum(realtime_outbound_queue_bytes_bucket{LE0})",
            "> 0 bytes",
        ),
        (
            f"sum(realtime_outbound_queue_bytes_gcount{SEL}) - sum(realtime_outbound_queue_bytes_bucket{LE64K})",
            "> 64 KiB",
        ),
        (f"sum(realtime_outbound_queue_bytes_gsum{SEL})", "total queued bytes"),
    ],
)
ts(
    "Slow-consumer drops and conflation / s",
    [
        (
            f"sum(rate(realtime_slow_consumer_disconnects_total{SEL}[{R}]))",
            "slow consumers dropped",
        ),
        (f"sum(rate(realtime_conflated_events_total{SEL}[{R}]))", "events conflated"),
    ],
    "ops",
)
newrow("Broker and recovery")
ts(
    "Broker publish latency",
    [
        (q(0.5, "realtime_broker_publish_latency_seconds"), "p50"),
        (q(0.99, "realtime_broker_publish_latency_seconds"), "p99"),
    ],
    "s",
)
ts(
    "Broker consume latency",
    [
        (q(0.5, "realtime_broker_consume_latency_seconds"), "p50"),
        (q(0.99, "realtime_broker_consume_latency_seconds"), "p99"),
    ],
    "s",
)
ts(
    "Broker errors / s",
    [(f"sum by (operation) (rate(realtime_broker_errors_total{SEL}[{R}]))", "{{operation}}")],
    "ops",
)
ts(
    "Recovery",
    [
        (f"sum(rate(realtime_recoveries_total{SEL}[{R}]))", "recoveries"),
        (f"sum(rate(realtime_recoveries_failed_total{SEL}[{R}]))", "failed (recovered=false)"),
        (f"sum(rate(realtime_recovery_replayed_events_total{SEL}[{R}]))", "events replayed"),
        (f"sum(rate(realtime_snapshot_events_total{SEL}[{R}]))", "snapshot events"),
    ],
    "ops",
)
newrow("Durable sessions and acks")
ts(
    "Publish-to-ack latency (the client's application)",
    [
        (q(0.5, "realtime_ack_latency_seconds"), "p50"),
        (q(0.99, "realtime_ack_latency_seconds"), "p99"),
    ],
    "s",
)
ts(
    "Sessions",
    [
        (f"sum(realtime_sessions_active{SEL})", "active"),
        (f"sum(realtime_session_unacked_offsets{SEL})", "unacked offsets"),
    ],
)
ts(
    "Sessions opened / s",
    [
        (f"sum(rate(realtime_sessions_created_total{SEL}[{R}]))", "created"),
        (f"sum(rate(realtime_sessions_resumed_total{SEL}[{R}]))", "resumed"),
        (f"sum(rate(realtime_sessions_expired_total{SEL}[{R}]))", "expired (resume found none)"),
        (
            f"sum by (reason) (rate(realtime_sessions_refused_total{SEL}[{R}]))",
            "refused {{reason}}",
        ),
    ],
    "ops",
)
newrow("Tier timeliness and compression")
ts(
    "Delayed tiers",
    [
        (f"sum(realtime_tier_delayed_events{SEL})", "events waiting (per event and tier)"),
        (f"sum(rate(realtime_tier_thinned_events_total{SEL}[{R}]))", "thinned / s"),
    ],
    desc="Events held back for tiers with delay_seconds, and odds dropped by "
    "min_interval_seconds (docs/security.md, Timeliness).",
)
ts(
    "Shared compression",
    [
        (f"sum(rate(realtime_compressed_messages_total{SEL}[{R}]))", "messages compressed / s"),
        (
            f"sum(rate(realtime_compression_saved_bytes_total{SEL}[{R}]))",
            "bytes saved per copy / s",
        ),
    ],
    desc="One deflate per message and tier view, whatever the recipients "
    "(REALTIME_COMPRESSION=shared).",
)
newrow("Process")
ts("Resident memory", [(f"process_resident_memory_bytes{SEL}", "{{instance}}")], "bytes")
ts("CPU", [(f"rate(process_cpu_seconds_total{SEL}[{R}])", "{{instance}}")], "percentunit")
ts(
    "Open file descriptors",
    [(f"process_open_fds{SEL}", "{{instance}}"), (f"process_max_fds{SEL}", "max {{instance}}")],
)

dash = {
    "title": "football-realtime",
    "uid": "football-realtime",
    "description": "WebSocket push service: connections, deliveries, latency, slow consumers, broker, recovery. Metrics: docs/operations.md.",
    "tags": ["football-realtime", "websocket"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "job",
                "label": "Job",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(realtime_instance_info, job)", "refId": "job"},
                "definition": "label_values(realtime_instance_info, job)",
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {},
                "refresh": 2,
                "hide": 0,
            },
        ]
    },
    "annotations": {"list": []},
    "panels": panels,
}


def render() -> str:
    return json.dumps(dash, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
