"""The evaluation report: summary table, Fig. 6 (reward scores per policy), Fig. 7 (training curves),
and Fig. 8-style token heatmaps, written as a self-contained `report.html` plus PNGs and `metrics.json`."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt

FIG6_METRICS = (("sequence_reward", "Sequence RM score"), ("fixed_token_reward_sum", "Σ fixed token rewards"),
                ("continuous_token_reward_sum", "Σ continuous token rewards"))


@dataclass
class HeatmapSample:
    policy: str
    prompt: str
    tokens: list[str]
    rewards: list[float]
    oracle: float | None = None


# Column headers a person reads, in the order the summary shows them (metrics.json keeps the keys).
METRIC_LABELS = {
    "oracle_score": "oracle (1 = ideal)",
    "oracle_helpful": "helpful (all asked facts right)",
    "oracle_style_faults": "style faults / response",
    "oracle_details": "details (share of asked)",
    "oracle_wrong_facts": "wrong facts / response",
    "continuous_token_reward_sum": "Σ token reward, continuous",
    "fixed_token_reward_sum": "Σ token reward, fixed",
    "sequence_reward": "sequence RM score",
    "response_tokens": "length (tokens)",
}
# The oracle's parts, SFT → policy, and which direction is better (+1 higher, −1 lower).
ORACLE_PARTS = (("oracle_score", 1), ("oracle_helpful", 1), ("oracle_style_faults", -1), ("oracle_details", 1),
                ("oracle_wrong_facts", -1))


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, key.replace("_", " "))


def ordered_metrics(summary: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The metrics of `summary`: those with a label in METRIC_LABELS' order, then the others sorted."""
    present = {k for row in summary.values() for k in row}
    return [k for k in METRIC_LABELS if k in present] + sorted(present - set(METRIC_LABELS))


@dataclass
class FaultExample:
    """One fault kind: a baseline response with it next to the other policy's response to the same question."""

    kind: str
    n_responses: int  # responses per policy
    baseline_with_fault: int  # responses of the baseline with this fault (at least once)
    policy_with_fault: int
    baseline: HeatmapSample | None  # None: no baseline response had this fault
    policy: HeatmapSample | None
    baseline_count: int = 0  # times the fault occurs in the example's responses
    policy_count: int = 0


@dataclass
class Report:
    title: str
    summary: dict[str, dict[str, float]]  # policy -> metric -> value
    heatmaps: list[HeatmapSample] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG path
    notes: list[str] = field(default_factory=list)
    comparison: tuple[str, str] | None = None  # (baseline, policy) whose oracle parts are set side by side
    examples: list[FaultExample] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)  # what this run can and cannot show


def reward_color(reward: float) -> str:
    """Green for positive, red for negative rewards, opacity by magnitude (clamped to [-1, 1])."""
    r = max(-1.0, min(1.0, reward))
    rgb = "22,163,74" if r >= 0 else "220,38,38"
    return f"rgba({rgb},{abs(r):.3f})"


def heatmap_html(tokens: Sequence[str], rewards: Sequence[float]) -> str:
    """Token spans coloured by reward, with the value on hover (title attribute)."""
    if len(tokens) != len(rewards):
        raise ValueError(f"{len(tokens)} tokens but {len(rewards)} rewards")
    spans = [f'<span class="tok" style="background:{reward_color(r)}" title="{r:+.3f}" data-reward="{r:.4f}">'
             f"{html.escape(t)}</span>" for t, r in zip(tokens, rewards, strict=True)]
    return '<div class="heatmap">' + "".join(spans) + "</div>"


def fig6_plot(summary: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Bar charts of the three reward scores of the paper's Fig. 6, one panel each."""
    policies = list(summary)
    fig, axes = plt.subplots(1, len(FIG6_METRICS), figsize=(4 * len(FIG6_METRICS), 3.2))
    for ax, (key, label) in zip(axes, FIG6_METRICS, strict=True):
        values = [summary[p].get(key, math.nan) for p in policies]
        ax.bar(range(len(policies)), values, color="#4f46e5")
        ax.set_xticks(range(len(policies)), policies, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.axhline(0, color="black", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _image_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#111}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}.heatmap{font-family:ui-monospace,monospace;white-space:pre-wrap;
line-height:1.9;border:1px solid #ddd;padding:.5rem;margin:.3rem 0 1rem}.tok{border-radius:3px;padding:1px 0}
.prompt{color:#555;white-space:pre-wrap;font-size:.9rem}img{max-width:100%}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1rem}
.pair .heatmap{overflow-wrap:anywhere}.pair h4{margin:.3rem 0}.counts{font-weight:normal;
font-size:.9rem;color:#555}td.better{color:#15803d}td.worse{color:#b91c1c}
"""


def changes(summary: Mapping[str, Mapping[str, float]], baseline: str,
            policy: str) -> list[tuple[str, float, float, float, str]]:
    """(label, baseline value, policy value, change, "better" / "worse" / "same") for each oracle part."""
    rows = []
    for key, better in ORACLE_PARTS:
        a, b = summary[baseline].get(key, math.nan), summary[policy].get(key, math.nan)
        if math.isnan(a) or math.isnan(b):
            continue
        delta = b - a
        verdict = "same" if abs(delta) < 5e-4 else ("better" if delta * better > 0 else "worse")
        rows.append((metric_label(key), a, b, delta, verdict))
    return rows


def _summary_table(report: Report) -> str:
    metrics = ordered_metrics(report.summary)
    head = "".join(f"<th>{html.escape(metric_label(m))}</th>" for m in metrics)
    rows = "".join(f"<tr><td>{html.escape(p)}</td>" + "".join(f"<td>{_fmt(row.get(m, math.nan))}</td>"
                                                              for m in metrics) + "</tr>"
                   for p, row in report.summary.items())
    return f"<h2>Summary</h2><table id='summary'><tr><th>policy</th>{head}</tr>{rows}</table>"


def _changes_table(report: Report) -> str:
    if report.comparison is None:
        return ""
    baseline, policy = report.comparison
    rows = changes(report.summary, baseline, policy)
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(label)}</td><td>{a:.3f}</td><td>{b:.3f}</td><td>{delta:+.3f}</td>"
                   f"<td class='{verdict}'>{verdict}</td></tr>" for label, a, b, delta, verdict in rows)
    return (f"<h2>What {html.escape(policy)} changed: the oracle's parts, {html.escape(baseline)} → "
            f"{html.escape(policy)}</h2><table id='changes'><tr><th>oracle part</th><th>{html.escape(baseline)}</th>"
            f"<th>{html.escape(policy)}</th><th>change</th><th></th></tr>{body}</table>")


def _example_side(sample: HeatmapSample | None, count: int, kind: str) -> str:
    if sample is None:
        return "<div class='side'></div>"
    oracle = "" if sample.oracle is None else f", oracle {sample.oracle:.2f}"
    return (f"<div class='side'><h4>{html.escape(sample.policy)}: {kind} × {count}{oracle}</h4>"
            + heatmap_html(sample.tokens, sample.rewards) + "</div>")


def _examples(report: Report) -> str:
    if not report.examples:
        return ""
    parts = ["<h2>One example per fault kind (test questions; green positive, red negative token reward)</h2>",
             "<p class='note'>Each example is the first response of the first policy with that fault whose "
             "counterpart (the same question and sample number) has it less often, if any: it shows what a change "
             "looks like, not how often it happens; the counts over all responses are next to each kind.</p>"]
    for ex in report.examples:
        kind = html.escape(ex.kind)
        policies = [s.policy for s in (ex.baseline, ex.policy) if s is not None]
        counts = (f"in {ex.baseline_with_fault} of {ex.n_responses} responses → {ex.policy_with_fault} of "
                  f"{ex.n_responses}")
        parts.append(f"<div class='example'><h3>{kind} <span class='counts'>({html.escape(counts)})</span></h3>")
        if ex.baseline is None:
            parts.append("<p>No response had this fault.</p></div>")
            continue
        parts.append(f"<div class='prompt'>{html.escape(ex.baseline.prompt.strip())}</div>"
                     f"<div class='pair' data-policies='{html.escape(' '.join(policies))}'>"
                     + _example_side(ex.baseline, ex.baseline_count, kind)
                     + _example_side(ex.policy, ex.policy_count, kind) + "</div></div>")
    return "".join(parts)


def render_report(report: Report) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>",
             _changes_table(report), _summary_table(report)]
    if report.scope:
        parts.append("<h2>What this run can and cannot show</h2>"
                     + "".join(f"<p class='scope'>{html.escape(n)}</p>" for n in report.scope))
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    parts.append(_examples(report))
    for caption, path in report.figures.items():
        parts.append(f"<h2>{html.escape(caption)}</h2>{_image_tag(path)}")
    if report.heatmaps:
        parts.append("<h2>Token rewards (green positive, red negative; hover for values)</h2>")
        for sample in report.heatmaps:
            oracle = "" if sample.oracle is None else f" — oracle {sample.oracle:.2f}"
            parts.append(f"<h3>{html.escape(sample.policy)}{oracle}</h3>"
                         f"<div class='prompt'>{html.escape(sample.prompt.strip())}</div>"
                         + heatmap_html(sample.tokens, sample.rewards))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, out_dir: Path, extra_metrics: Mapping[str, Any] | None = None) -> Path:
    """report.html and metrics.json into `out_dir` (PNGs referenced by `report.figures` already there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(render_report(report), encoding="utf-8")
    payload: dict[str, Any] = {"title": report.title, "summary": report.summary}
    if report.comparison is not None:
        payload["changes"] = {label: {"from": a, "to": b, "change": delta, "verdict": verdict}
                              for label, a, b, delta, verdict in changes(report.summary, *report.comparison)}
    if report.examples:
        payload["fault_examples"] = [
            {"kind": ex.kind, "n_responses": ex.n_responses, "baseline_with_fault": ex.baseline_with_fault,
             "policy_with_fault": ex.policy_with_fault, "baseline_count": ex.baseline_count,
             "policy_count": ex.policy_count, "prompt": ex.baseline.prompt if ex.baseline else None}
            for ex in report.examples]
    payload.update(extra_metrics or {})
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return out_dir / "report.html"
