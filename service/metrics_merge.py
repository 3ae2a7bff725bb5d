"""Sum several replicas' Prometheus texts into one (the /metrics of a multi-replica deployment).

Every metric of the service is a counter, a histogram or a gauge whose sum over replicas means something:
requests and errors in total, one latency histogram over all requests, sequences queued and requests in
flight across the deployment (what an autoscaler on queue depth needs). Samples with the same name and
labels are added (a `_created` timestamp takes the earliest); HELP and TYPE lines are kept once.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

REPLICAS_METRIC = "tlcr_replicas_reporting"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def merge_metrics(texts: Iterable[str]) -> str:
    """One exposition text whose every sample is the sum of that sample over `texts`, plus
    `tlcr_replicas_reporting` (how many texts were merged)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    count = 0
    for text in texts:
        count += 1
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):  # when the series began: the earliest replica's
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    lines = [f"# HELP {REPLICAS_METRIC} Replicas whose metrics are summed here",
             f"# TYPE {REPLICAS_METRIC} gauge", f"{REPLICAS_METRIC} {float(count)}"]
    for name, (kind, documentation, samples) in families.items():
        lines.append(f"# HELP {name} {documentation}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample_name, labels), value in samples.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{label_text}}} {floatToGoString(value)}" if label_text
                         else f"{sample_name} {floatToGoString(value)}")
    return "\n".join(lines) + "\n"
