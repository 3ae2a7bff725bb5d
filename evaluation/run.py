"""Run an evaluation and write its report folder (used by `tlcr eval` and `tlcr demo`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import DataError
from tlcr.evaluation.evaluate import EvalConfig, evaluate_policies, heatmap_samples
from tlcr.evaluation.fault_examples import fault_examples
from tlcr.evaluation.report import Report, fig6_plot, write_report
from tlcr.service.client import TokenRewardClient


def run_evaluation(policies: Mapping[str, str | Path], prompts: Sequence[str], client: TokenRewardClient,
                   config: EvalConfig, out: Path, *, task: ControlledTask | None = None,
                   ppo_runs: Sequence[str | Path] = (), title: str = "tlcr evaluation",
                   notes: Sequence[str] = (), extra_metrics: Mapping[str, Any] | None = None,
                   compare: tuple[str, str] | None = None, scope: Sequence[str] = (),
                   ) -> dict[str, dict[str, float]]:
    """Evaluate, then write report.html, metrics.json, fig6.png, fig7.png (if runs given), responses.jsonl.

    `compare` (baseline, policy): the report sets their oracle parts side by side and shows one example per
    fault kind (needs `task`); `scope`: what the run can and cannot show, in the report's words."""
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate_policies(policies, prompts, client, config, task=task)
    summary = {r.name: r.metrics for r in results}
    with open(out / "responses.jsonl", "w", encoding="utf-8") as f:
        for result in results:
            for row in result.per_item:
                f.write(json.dumps({"policy": result.name, **row}, ensure_ascii=False) + "\n")
    figures = {"Fig. 6 — reward scores of each policy on held-out prompts": fig6_plot(summary, out / "fig6.png")}
    report_notes = list(notes)
    if ppo_runs:
        from tlcr.trainer.plot import plot_runs

        try:
            figures["Fig. 7 — PPO training curves per reward mode"] = plot_runs(ppo_runs, out / "fig7.png")
        except DataError as exc:  # a run without metrics must not lose the rest of the report
            report_notes.append(f"Fig. 7 not drawn: {exc}")
    examples = []
    if compare is not None and task is not None:
        by_name = {r.name: r for r in results}
        baseline, policy = (by_name[name] for name in compare)
        examples = fault_examples(baseline.name, baseline.per_item, policy.name, policy.per_item)
    report = Report(title, summary, heatmap_samples(results, config.heatmap_samples), figures, report_notes,
                    comparison=compare, examples=examples, scope=list(scope))
    write_report(report, out, {"policies": {k: str(v) for k, v in policies.items()},
                               "n_prompts": len(prompts), **(extra_metrics or {})})
    return summary
