"""Scraping /metrics with prometheus-client's own text parser, and PromQL's
``histogram_quantile`` written out independently of the service's code."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .support import TIMEOUT


@dataclass
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **match: str) -> float:
        """Sum over every series of ``name`` whose labels include ``match``."""
        want = set(match.items())
        return sum(v for (n, lbl), v in self.samples.items() if n == name and want <= set(lbl))

    def labels(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(lbl)[label]: v
            for (n, lbl), v in self.samples.items()
            if n == name and label in dict(lbl)
        }

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        out = []
        want = set(labels.items())
        for (n, lbl), v in self.samples.items():
            d = dict(lbl)
            if n == name + "_bucket" and want <= set(lbl) and len(lbl) == len(want) + 1:
                out.append((float(d["le"]), v))
        return sorted(out)


def scrape(base_url: str, path: str = "/metrics") -> Scrape:
    r = httpx.get(base_url + path, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    families: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(r.text):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(families, samples)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` (promql/quantile.go, bucketQuantile)."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    observations = buckets[-1][1]
    if observations == 0:
        return None
    rank = q * observations
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)
