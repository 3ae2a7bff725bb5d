"""The sum of several replicas' metrics (tlcr.service.metrics_merge): real ServiceMetrics registries."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tlcr.service.metrics import ServiceMetrics
from tlcr.service.metrics_merge import merge_metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_histograms_and_gauges_add_up_and_created_is_the_earliest() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.requests.labels("/token_rewards", "200").inc(3)
    b.requests.labels("/token_rewards", "200").inc(2)
    b.requests.labels("/token_rewards", "422").inc()
    a.latency.labels("/token_rewards").observe(0.003)
    b.latency.labels("/token_rewards").observe(0.3)
    a.queue.labels("discriminator").set(4)
    b.queue.labels("discriminator").set(5)
    texts = [a.render().decode(), b.render().decode()]
    merged = samples(merge_metrics(texts))
    route = (("route", "/token_rewards"),)
    assert merged[("tlcr_requests_total", (*route, ("status", "200")))] == 5
    assert merged[("tlcr_requests_total", (*route, ("status", "422")))] == 1
    assert merged[("tlcr_request_latency_seconds_count", route)] == 2
    assert merged[("tlcr_request_latency_seconds_sum", route)] == 0.303
    assert merged[("tlcr_request_latency_seconds_bucket", (("le", "0.005"), *route))] == 1
    assert merged[("tlcr_request_latency_seconds_bucket", (("le", "+Inf"), *route))] == 2
    assert merged[("tlcr_queue_depth", (("model", "discriminator"),))] == 9
    assert merged[("tlcr_replicas_reporting", ())] == 2
    created = [samples(t)[("tlcr_requests_created", (*route, ("status", "200")))] for t in texts]
    assert merged[("tlcr_requests_created", (*route, ("status", "200")))] == min(created)


def test_one_replica_is_its_own_metrics_plus_the_replica_count() -> None:
    m = ServiceMetrics()
    m.errors.labels("validation").inc()
    text = m.render().decode()
    merged = samples(merge_metrics([text]))
    assert merged.pop(("tlcr_replicas_reporting", ())) == 1
    assert merged == samples(text)
    assert 'tlcr_errors_total{kind="validation"} 1.0' in merge_metrics([text])
