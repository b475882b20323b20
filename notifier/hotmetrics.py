"""Counters and histograms for the worker's hot path, kept in plain Python numbers.

prometheus_client guards every value with a lock (its metrics may be shared by threads) and
walks the bucket list in Python on each ``observe``: with seven updates per push that was
about 8 % of a worker's CPU. A worker updates its metrics from its event loop thread only,
so these keep plain numbers, find a bucket with ``bisect``, and hand prometheus_client the
finished families when it collects (its custom collector interface). The exposition is the
same as prometheus_client's ``Counter`` and ``Histogram`` without the ``_created`` series.

Use them from one thread only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

ChildT = TypeVar("ChildT")


class _Family(Collector, Generic[ChildT]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        if not self._labelnames:
            self._children[()] = self._new_child()
        registry.register(self)

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str, **by_name: str) -> ChildT:
        """The child for these label values (positional, or all by name).

        Looked up first as given, before any check or conversion: the delivery path asks for
        the same few children on every push (this replaced its own per-metric caches).
        """
        if not by_name:
            found = self._children.get(values)
            if found is not None:
                return found
        if by_name:
            if values or set(by_name) != set(self._labelnames):
                raise ValueError(f"{self._name}: give all of {self._labelnames} by name")
            values = tuple(by_name[name] for name in self._labelnames)
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected labels {self._labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def describe(self) -> Iterator[Metric]:
        yield from self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        raise NotImplementedError


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class LocalCounter(_Family[CounterChild]):
    """A ``Counter`` (exported as ``<name>_total``)."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """For a counter without labels."""
        self.labels().inc(amount)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        if with_samples:
            for values, child in list(self._children.items()):
                family.add_metric(list(values), child.value)
        yield family


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # buckets are "le": inclusive
        self.sum += amount


class LocalHistogram(_Family[HistogramChild]):
    """A ``Histogram`` with fixed bucket upper bounds (+Inf added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        self._bounds = tuple(sorted(float(b) for b in buckets))
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        if with_samples:
            edges = [*(floatToGoString(b) for b in self._bounds), "+Inf"]  # type: ignore[no-untyped-call]
            for values, child in list(self._children.items()):
                buckets, total = [], 0
                for edge, count in zip(edges, child.counts, strict=True):
                    total += count
                    buckets.append((edge, float(total)))
                family.add_metric(list(values), buckets, child.sum)
        yield family
