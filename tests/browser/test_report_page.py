"""report.html in real headless Chromium: the smoke demo's report, and one built by evaluation.report.

The smoke demo's discriminator is barely trained, so its rewards may share one sign and be faint; its page is
checked for what any run must show (figures decoded, one coloured span per token, each painted the colour
its reward asks for). A report with known rewards of both signs checks that green and red are visible.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import Page

from tlcr.evaluation.report import FaultExample, HeatmapSample, Report, fig6_plot, write_report

POSITIVE_RGB = (22, 163, 74)  # evaluation.report.reward_color
NEGATIVE_RGB = (220, 38, 38)

SPANS_JS = """Array.from(document.querySelectorAll('span.tok')).map(s => {
    const r = s.getBoundingClientRect();
    return {text: s.textContent, reward: parseFloat(s.dataset.reward), title: s.title,
            background: getComputedStyle(s).backgroundColor, lines: s.getClientRects().length,
            box: {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}};
})"""


def parse_rgba(css: str) -> tuple[tuple[int, int, int], float]:
    match = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", css)
    assert match, f"unexpected CSS colour {css!r}"
    red, green, blue, alpha = match.groups()
    return (int(red), int(green), int(blue)), 1.0 if alpha is None else float(alpha)


def expected_background(reward: float) -> tuple[tuple[int, int, int], float]:
    return (POSITIVE_RGB if reward >= 0 else NEGATIVE_RGB), min(1.0, abs(reward))


def blended_on_white(rgb: tuple[int, int, int], alpha: float) -> np.ndarray:
    """What a span's background looks like on the white page, as screenshot values in [0, 1]."""
    return (1.0 - alpha) + alpha * np.asarray(rgb, dtype=np.float64) / 255.0


def open_report(page: Page, path: Path) -> list[dict[str, Any]]:
    page.goto(path.resolve().as_uri())
    page.wait_for_function("Array.from(document.images).every(img => img.complete)")
    return list(page.evaluate(SPANS_JS))


def assert_spans_painted_by_reward(spans: list[dict[str, Any]]) -> None:
    for span in spans:
        assert math.isfinite(span["reward"]), span
        rgb, alpha = parse_rgba(span["background"])
        want_rgb, want_alpha = expected_background(span["reward"])
        assert rgb == want_rgb and math.isclose(alpha, want_alpha, abs_tol=0.01), span
        # hover text: 3 decimals of the same reward (data-reward carries 4)
        assert re.fullmatch(r"[+-]\d\.\d{3}", span["title"]) and abs(float(span["title"]) - span["reward"]) < 6e-4, span
        if span["text"].strip():  # (a token that is part of a UTF-8 character can come back as "")
            assert span["box"]["width"] > 0 and span["box"]["height"] > 0, f"span not laid out: {span}"


PAIRS_JS = """Array.from(document.querySelectorAll('.pair')).map(pair =>
    Array.from(pair.querySelectorAll('.side')).map(side => {
        const r = side.getBoundingClientRect();
        return {title: (side.querySelector('h4') || {}).textContent, x: r.left, y: r.top, width: r.width};
    }))"""


def assert_pairs_side_by_side(page: Page, policies: list[str]) -> None:
    """Each fault example shows the two policies' responses next to each other: same row, baseline left."""
    pairs = page.evaluate(PAIRS_JS)
    for left, right in pairs:
        assert left["title"].startswith(policies[0]) and right["title"].startswith(policies[1]), (left, right)
        assert abs(left["y"] - right["y"]) < 1 and left["x"] + left["width"] <= right["x"], (left, right)
        assert left["width"] > 200 and right["width"] > 200, (left, right)


def span_pixels(page: Page, span: dict[str, Any], decode_png: Any) -> np.ndarray:
    """Median colour of a span's box in a screenshot (the glyphs cover less than half of it)."""
    box = span["box"]
    # full_page: the clip is in page coordinates, as the box is
    image = decode_png(page.screenshot(full_page=True, clip={"x": box["x"], "y": box["y"] + 2, "width": box["width"],
                                                             "height": box["height"] - 4}))
    return np.asarray(np.median(image[..., :3].reshape(-1, 3), axis=0))


def test_demo_report_renders_figures_and_coloured_token_spans(page: Page, demo_smoke_run: Any,
                                                              decode_png: Any, pixel_stats: Any) -> None:
    report = Path(demo_smoke_run.run_dir) / "report.html"
    spans = open_report(page, report)
    source_rewards = re.findall(r'<span class="tok"[^>]*data-reward="([^"]+)"', report.read_text(encoding="utf-8"))
    assert len(spans) == len(source_rewards) > 0
    assert_spans_painted_by_reward(spans)

    figures = page.evaluate("Array.from(document.images).map(img => [img.alt, img.naturalWidth, img.naturalHeight])")
    assert sorted(alt for alt, _, _ in figures) == ["fig6.png", "fig7.png"]
    assert all(width > 100 and height > 100 for _, width, height in figures), f"a figure did not decode: {figures}"
    rows = page.evaluate("Array.from(document.querySelectorAll('#summary tr')).map(tr => tr.cells[0].textContent)")
    assert rows == ["policy", "SFT", "TLCR"]
    assert_pairs_side_by_side(page, ["SFT", "TLCR"])

    top = pixel_stats(decode_png(page.screenshot()))
    assert top["non_white"] > 0.05, f"blank screenshot: {top}"
    # the strongest spans, whatever their sign, look like their colour blended on white
    # a wrapped span's box also covers white page; an empty one has no box
    one_line = [s for s in spans if s["lines"] == 1 and s["box"]["width"] >= 4]
    for span in sorted(one_line, key=lambda s: -abs(s["reward"]))[:3]:
        want = blended_on_white(*expected_background(span["reward"]))
        got = span_pixels(page, span, decode_png)
        assert np.allclose(got, want, atol=0.03), (span, got, want)


def test_report_heatmap_shows_green_and_red_tokens(page: Page, tmp_path: Path, decode_png: Any,
                                                    pixel_stats: Any) -> None:
    summary = {"SFT": {"sequence_reward": 0.1, "fixed_token_reward_sum": -1.0, "continuous_token_reward_sum": -0.4},
               "TLCR": {"sequence_reward": 0.5, "fixed_token_reward_sum": 2.0, "continuous_token_reward_sum": 1.2}}
    tokens = [" The", " capital", " of", " Nesolland", " is", " Qarvish", ".", " You", " are", " <b>stupid</b>", "."]
    rewards = [0.9, 0.8, 0.85, 0.9, 0.7, -0.95, 0.0, -0.8, -0.9, -1.0, 0.6]
    report = Report("browser test", summary, [HeatmapSample("TLCR", "\n\nHuman: Capital?\n\nAssistant:", tokens,
                                                            rewards, oracle=0.5)],
                    {"Fig. 6": fig6_plot(summary, tmp_path / "fig6.png")})
    spans = open_report(page, write_report(report, tmp_path / "report"))
    assert [s["text"] for s in spans] == tokens  # escaped markup shows as text, not as an element
    assert page.evaluate("document.querySelectorAll('.heatmap b').length") == 0
    assert_spans_painted_by_reward(spans)

    page_image = decode_png(page.screenshot())
    assert pixel_stats(page_image)["non_white"] > 0.05 and page_image.std() > 0.05, "blank page screenshot"
    heatmap = pixel_stats(decode_png(page.locator(".heatmap").screenshot()))
    assert heatmap["green"] > 0.05 and heatmap["red"] > 0.05, heatmap
    neutral = next(s for s in spans if s["reward"] == 0.0)
    assert np.allclose(span_pixels(page, neutral, decode_png), 1.0, atol=0.03), \
        "a zero reward must leave the token unpainted"


def test_a_fault_example_shows_both_responses_side_by_side_with_their_colours(page: Page, tmp_path: Path,
                                                                              decode_png: Any,
                                                                              pixel_stats: Any) -> None:
    prompt = "\n\nHuman: What is the capital of Nesolland?\n\nAssistant:"
    rude = HeatmapSample("SFT", prompt, [" Stop", " wasting", " my", " time", ".", " The", " capital"],
                         [-0.9, -0.95, -0.9, -0.9, -0.5, 0.0, 0.1], 0.4)
    fixed = HeatmapSample("TLCR", prompt, [" The", " capital", " of", " Nesolland", " is", " Qarvish", "."],
                          [0.1, 0.0, 0.05, 0.0, 0.1, 0.9, 0.8], 1.0)
    summary = {"SFT": {"oracle_style_faults": 0.2}, "TLCR": {"oracle_style_faults": 0.0}}
    report = Report("examples", summary, comparison=("SFT", "TLCR"),
                    examples=[FaultExample("rude sentence", 4, 1, 0, rude, fixed, 1, 0)])
    spans = open_report(page, write_report(report, tmp_path / "report"))
    assert_spans_painted_by_reward(spans)
    assert_pairs_side_by_side(page, ["SFT", "TLCR"])
    sides = page.locator(".pair .side .heatmap")
    left, right = (pixel_stats(decode_png(sides.nth(i).screenshot())) for i in range(2))
    assert left["red"] > 0.05 and right["green"] > 0.02, (left, right)  # the rude sentence red, the fix green
