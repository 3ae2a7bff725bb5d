import json
import math
import re
from pathlib import Path

import pytest

from tlcr.evaluation.report import (
    FaultExample,
    HeatmapSample,
    Report,
    fig6_plot,
    heatmap_html,
    reward_color,
    write_report,
)


def test_reward_color_sign_and_intensity() -> None:
    assert reward_color(1.0) == "rgba(22,163,74,1.000)"
    assert reward_color(-0.25) == "rgba(220,38,38,0.250)"
    assert reward_color(-7) == "rgba(220,38,38,1.000)"


def test_heatmap_escapes_and_carries_values() -> None:
    out = heatmap_html(["<b>", " ok"], [-0.5, 0.75])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert out.count('class="tok"') == 2 and 'title="+0.750"' in out and 'data-reward="-0.5000"' in out
    with pytest.raises(ValueError, match="2 tokens but 1 rewards"):
        heatmap_html(["a", "b"], [0.1])


def test_write_report(tmp_path: Path) -> None:
    summary = {"sft": {"sequence_reward": 0.1, "fixed_token_reward_sum": -1.0, "continuous_token_reward_sum": -0.5},
               "tlcr": {"sequence_reward": 0.4, "fixed_token_reward_sum": 2.0, "continuous_token_reward_sum": math.nan}}
    png = fig6_plot(summary, tmp_path / "fig6.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = Report("demo", summary, [HeatmapSample("tlcr", "Q?", [" a", " b"], [0.5, -0.5], 1.0)],
                    {"Fig. 6": png}, ["a note"])
    path = write_report(report, tmp_path / "out", {"extra": 1})
    page = path.read_text()
    assert "data:image/png;base64," in page and "oracle 1.00" in page and "<td>nan</td>" in page
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["summary"]["tlcr"]["sequence_reward"] == 0.4 and metrics["extra"] == 1


def test_summary_headers_are_readable_and_the_oracle_parts_are_set_side_by_side(tmp_path: Path) -> None:
    summary = {"SFT": {"continuous_token_reward_sum": 0.6, "oracle_score": -0.1, "oracle_helpful": 0.06,
                       "oracle_style_faults": 0.12, "oracle_details": 0.9, "oracle_wrong_facts": 1.2,
                       "judge_parse_failures": 1.0},
               "TLCR": {"continuous_token_reward_sum": 2.0, "oracle_score": -0.1, "oracle_helpful": 0.08,
                        "oracle_style_faults": 0.01, "oracle_details": 0.95, "oracle_wrong_facts": 1.3,
                        "judge_parse_failures": 1.0}}
    fixed = HeatmapSample("TLCR", "\n\nHuman: Capital?\n\nAssistant:", [" The", " capital", "."], [0.5, 0.4, 0.1], 1.0)
    rude = HeatmapSample("SFT", fixed.prompt, [" Stop", " it", ".", " The"], [-0.9, -0.8, -0.7, 0.5], 0.5)
    examples = [FaultExample("rude sentence", 4, 2, 0, rude, fixed, 1, 0),
                FaultExample("hedge", 4, 0, 0, None, None)]
    report = Report("demo", summary, comparison=("SFT", "TLCR"), examples=examples,
                    scope=["One seed cannot show a difference between methods: see docs/results.md."])
    page = write_report(report, tmp_path).read_text()
    head = re.search(r"<table id='summary'><tr>(.*?)</tr>", page)
    assert head is not None
    headers = re.findall(r"<th>([^<]*)</th>", head.group(1))
    assert headers[:7] == ["policy", "oracle (1 = ideal)", "helpful (all asked facts right)",
                           "style faults / response", "details (share of asked)", "wrong facts / response",
                           "Σ token reward, continuous"]
    assert headers[7] == "judge parse failures"  # a metric without a label still loses its underscores
    assert "continuous_token_reward_sum" not in page
    changes = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td class='(\w+)'>",
                         page.split("<table id='changes'>")[1].split("</table>")[0])
    assert [(label, delta, verdict) for label, _, _, delta, verdict in changes] == [
        ("oracle (1 = ideal)", "+0.000", "same"), ("helpful (all asked facts right)", "+0.020", "better"),
        ("style faults / response", "-0.110", "better"), ("details (share of asked)", "+0.050", "better"),
        ("wrong facts / response", "+0.100", "worse")]
    assert "What this run can and cannot show" in page and "docs/results.md" in page
    assert "in 2 of 4 responses → 0 of 4" in page and "No response had this fault." in page
    pair = page.split("<div class='pair'")[1]
    assert pair.index("SFT: rude sentence × 1") < pair.index("TLCR: rude sentence × 0")
    assert page.count("<div class='pair'") == 1 and pair.count('class="tok"') == 7
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["changes"]["style faults / response"] == {"from": 0.12, "to": 0.01,
                                                             "change": pytest.approx(-0.11), "verdict": "better"}
    assert [e["kind"] for e in metrics["fault_examples"]] == ["rude sentence", "hedge"]
    assert metrics["fault_examples"][1]["prompt"] is None
