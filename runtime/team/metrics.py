"""Prometheus metrics of the team server: latencies, tokens, outcomes, and the scheduler's state
read at scrape time (GET /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from runtime.generate import GenerationResult
from runtime.team.scheduler import Job, Scheduler


class _SchedulerCollector:
    """Scheduler state read at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Any:
        """Gauges and counters of the queue, the batch and the KV slots."""
        scheduler = self.scheduler
        yield GaugeMetricFamily("coderlsp_queue_depth", "Jobs waiting", scheduler.queue_depth)
        yield GaugeMetricFamily("coderlsp_active_generations", "Jobs running", scheduler.active)
        yield GaugeMetricFamily(
            "coderlsp_kv_slots", "KV slots in the pool", len(scheduler.pool.slots)
        )
        stats = {**scheduler.stats, **scheduler.pool.stats}
        for name, value in sorted(stats.items()):
            yield CounterMetricFamily(f"coderlsp_scheduler_{name}", f"Scheduler: {name}", value)


class Metrics:
    """Prometheus metrics of one server (its own registry)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "coderlsp_request_duration_seconds",
            "Request latency",
            ["route", "status"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.ttft = Histogram(
            "coderlsp_time_to_first_token_seconds",
            "From queueing to the first generated token",
            registry=r,
            buckets=(0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
        )
        self.queue_wait = Histogram(
            "coderlsp_queue_wait_seconds", "Time queued before starting", registry=r
        )
        self.decode_rate = Histogram(
            "coderlsp_decode_tokens_per_second",
            "Decode speed per request",
            registry=r,
            buckets=(5, 10, 20, 40, 80, 160, 320),
        )
        self.prompt_tokens = Counter("coderlsp_prompt_tokens", "Prompt tokens", registry=r)
        self.cached_tokens = Counter(
            "coderlsp_cached_prompt_tokens", "Prompt tokens found in the KV cache", registry=r
        )
        self.generated_tokens = Counter("coderlsp_generated_tokens", "Generated tokens", registry=r)
        self.generations = Counter(
            "coderlsp_generations", "Finished generations by reason", ["reason"], registry=r
        )
        self.cancellations = Counter(
            "coderlsp_cancellations", "Cancelled generations by cause", ["cause"], registry=r
        )
        self.rejections = Counter(
            "coderlsp_rejected_requests", "Refused requests by status", ["status"], registry=r
        )
        self.draft_proposed = Counter(
            "coderlsp_draft_proposed_tokens",
            "Speculative tokens proposed (draft model and prompt lookup)",
            registry=r,
        )
        self.draft_accepted = Counter(
            "coderlsp_draft_accepted_tokens",
            "Speculative tokens accepted (draft model and prompt lookup)",
            registry=r,
        )
        r.register(_SchedulerCollector(scheduler))

    def observe(self, job: Job, result: GenerationResult) -> None:
        """Account for one finished job."""
        self.generations.labels(result.finish_reason).inc()
        if job.cancel_cause is not None:
            self.cancellations.labels(job.cancel_cause).inc()
        self.prompt_tokens.inc(result.prompt_tokens)
        self.cached_tokens.inc(result.cached_tokens)
        self.generated_tokens.inc(result.generated_tokens)
        if job.started_at is not None:
            self.queue_wait.observe(job.started_at - job.enqueued_at)
        if job.first_token_at is not None:
            self.ttft.observe(job.first_token_at - job.enqueued_at)
        if result.decode_ms > 0 and result.generated_tokens > 1:
            self.decode_rate.observe((result.generated_tokens - 1) / (result.decode_ms / 1e3))
        self.draft_proposed.inc(result.speculation.proposed)
        self.draft_accepted.inc(result.speculation.accepted)
