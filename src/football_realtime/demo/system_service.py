"""The simulated notification/system service (通知服务): system status, alerts and the
prediction accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .live_match import Event, make_event
from .model import (
    Outcome,
    Probabilities,
    brier_score,
)

SYSTEM_SOURCE = "notification-service"


@dataclass
class Accuracy:
    """Running accuracy of completed (pre-match) predictions."""

    total: int = 0
    hits: int = 0
    brier_sum: float = 0.0
    log_loss_sum: float = 0.0
    by_league: dict[str, list[int]] = field(default_factory=dict)

    def add(self, league: str, pre: Probabilities, actual: Outcome) -> None:
        self.total += 1
        hit = pre.favourite == actual
        self.hits += hit
        self.brier_sum += brier_score(pre, actual)
        self.log_loss_sum += -math.log(max(pre.of(actual), 1e-12))
        row = self.by_league.setdefault(league, [0, 0])
        row[0] += 1
        row[1] += hit

    @property
    def hit_rate(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def brier(self) -> float:
        return self.brier_sum / self.total if self.total else 0.0


class SystemService:
    """Notification/system service: system_status, analytics_updated, system_alert."""

    def __init__(self, now: Callable[[], str]) -> None:
        self.now = now
        self.accuracy = Accuracy()
        self.behind = False
        self.lost_events = 0

    def analytics(self) -> Event:
        a = self.accuracy
        metrics = {"log_loss": round(a.log_loss_sum / a.total, 4) if a.total else 0.0}
        for league, (n, hits) in sorted(a.by_league.items()):
            metrics[f"hit_rate.{league}"] = round(hits / n, 4)
        return make_event(
            "analytics_updated",
            {
                "period": "demo_session",
                "total_predictions": a.total,
                "correct_predictions": a.hits,
                "accuracy": round(a.hit_rate, 4),
                "hit_rate": round(a.hit_rate, 4),
                "brier_score": round(a.brier, 4),
                "metrics": metrics,
            },
            SYSTEM_SOURCE,
            self.now(),
        )

    def status(self, components: dict[str, Any]) -> Event:
        degraded = self.behind
        return make_event(
            "system_status",
            {
                "status": "degraded" if degraded else "healthy",
                "message": "simulator running behind schedule"
                if degraded
                else "all demo services running",
                "components": components,
            },
            SYSTEM_SOURCE,
            self.now(),
        )

    def lag(self, lag_seconds: float, threshold: float) -> list[Event]:
        """Alert once when the simulator falls behind, and once when it has caught up."""
        if not self.behind and lag_seconds > threshold:
            self.behind = True
            return [
                self.alert(
                    "warning",
                    "high",
                    "simulator",
                    f"simulator is {lag_seconds:.1f}s behind schedule",
                    {"lag_seconds": round(lag_seconds, 3), "threshold_seconds": threshold},
                )
            ]
        if self.behind and lag_seconds < threshold / 2:
            self.behind = False
            return [
                self.alert(
                    "info",
                    "low",
                    "simulator",
                    "simulator caught up with its schedule",
                    {"lag_seconds": round(lag_seconds, 3)},
                )
            ]
        return []

    def publish_failures(self, lost: int, last_error: str) -> Event:
        return self.alert(
            "error",
            "high",
            "publisher",
            f"{lost} events could not be published to the realtime service",
            {"lost_events": lost, "last_error": last_error[:300]},
        )

    def alert(
        self, alert_type: str, severity: str, component: str, message: str, details: dict[str, Any]
    ) -> Event:
        return make_event(
            "system_alert",
            {
                "alert_type": alert_type,
                "message": message,
                "severity": severity,
                "component": component,
                "details": details,
            },
            SYSTEM_SOURCE,
            self.now(),
        )
