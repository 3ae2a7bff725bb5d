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


@dataclass
class Report:
    title: str
    summary: dict[str, dict[str, float]]  # policy -> metric -> value
    heatmaps: list[HeatmapSample] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG path
    notes: list[str] = field(default_factory=list)


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
"""


def render_report(report: Report) -> str:
    metrics = sorted({k for row in report.summary.values() for k in row})
    # <wbr> lets long metric names wrap at underscores, so the table fits the page
    head = "".join(f"<th>{html.escape(m).replace('_', '_<wbr>')}</th>" for m in metrics)
    rows = "".join(f"<tr><td>{html.escape(p)}</td>" + "".join(f"<td>{_fmt(row.get(m, math.nan))}</td>"
                                                              for m in metrics) + "</tr>"
                   for p, row in report.summary.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>",
             f"<h2>Summary</h2><table id='summary'><tr><th>policy</th>{head}</tr>{rows}</table>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
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
    payload = {"title": report.title, "summary": report.summary, **(extra_metrics or {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return out_dir / "report.html"
