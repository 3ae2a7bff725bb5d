import json
import math
from pathlib import Path

import pytest

from tlcr.evaluation.report import HeatmapSample, Report, fig6_plot, heatmap_html, reward_color, write_report


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
