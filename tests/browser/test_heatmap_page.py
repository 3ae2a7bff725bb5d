"""The service's heatmap page (GET /) in real headless Chromium against a real service subprocess on loopback.

The page calls POST /token_rewards from the browser and colours one span per token. An untrained tiny
discriminator gives D ≈ 0.5 (colours too faint to see), so the served checkpoint is the `tiny_token_classifier_dir`
one with its one-logit head centred and sharpened on the text typed here: about half of its tokens get r ≈ +0.8
and half r ≈ −0.8, which the screenshot must show as green and red.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from playwright.sync_api import Page

from tlcr.service.launcher import ServiceProcess, start_service

API_KEY = "browser-test-key"
PROMPT = "\n\nHuman: What is the capital of Nesolland?\n\nAssistant:"
RESPONSE = " The capital of Nesolland is Umlodun. You are stupid to ask. Maybe, I do not know."
TARGET_ABS_LOGIT = 2.5  # median |logit| after sharpening: |r| = |2·sigmoid(2.5) − 1| ≈ 0.85


def sharpen_head(scorer: Any, prompt: str, response: str) -> torch.nn.Linear:
    """Centre the one-logit head on `response`'s median logit and scale it so the median |logit| is 2.5."""
    head = scorer.model.score
    assert isinstance(head, torch.nn.Linear) and head.out_features == 1, head
    probabilities = scorer.probabilities([scorer.encode(prompt, response)])[0].astype(np.float64)
    logits = np.log(probabilities) - np.log1p(-probabilities)
    centre = float(np.median(logits))
    scale = TARGET_ABS_LOGIT / float(np.median(np.abs(logits - centre)))
    with torch.no_grad():
        head.weight.mul_(scale)
        bias = head.bias if head.bias is not None else torch.zeros(1)
        new_bias = scale * (bias - centre)
        if head.bias is None:
            head.bias = torch.nn.Parameter(new_bias)
        else:
            head.bias.copy_(new_bias)
    return head


@pytest.fixture(scope="module")
def contrasting_discriminator_dir(tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tlcr.service.scorer import TokenScorer

    scorer = TokenScorer.load(str(tiny_token_classifier_dir), device="cpu", dtype="float32")
    sharpen_head(scorer, PROMPT, RESPONSE)
    out = tmp_path_factory.mktemp("contrasting-discriminator")
    scorer.model.save_pretrained(out)
    scorer.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def heatmap_service(contrasting_discriminator_dir: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("heatmap-service") / "service.log"
    with start_service(contrasting_discriminator_dir, api_key=API_KEY, log_path=log,
                       extra_args=["--torch-threads", "1", "--max-wait-ms", "2"]) as service:
        yield service


def api_rewards(service: ServiceProcess, mode: str, threshold: float = 0.6) -> dict[str, Any]:
    """The same request the page sends, made directly: what the page must show."""
    response = httpx.post(f"{service.url}/token_rewards", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"items": [{"prompt": PROMPT, "response": RESPONSE}], "mode": mode,
                                "threshold": threshold, "return_probabilities": True, "return_tokens": True},
                          timeout=30)
    response.raise_for_status()
    return dict(response.json()["results"][0])


def page_colour(reward: float, mode: str) -> tuple[tuple[int, int, int], float]:
    """The page's colour(): rgb and alpha (green positive, red negative, alpha 0.85·|r|)."""
    r = 2 * reward - 1 if mode == "probability" else max(-1.0, min(1.0, reward))
    return ((26, 150, 65) if r >= 0 else (215, 25, 28)), min(1.0, abs(r)) * 0.85


def parse_rgba(css: str) -> tuple[tuple[int, int, int], float]:
    match = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", css)
    assert match, f"unexpected CSS colour {css!r}"
    red, green, blue, alpha = match.groups()
    return (int(red), int(green), int(blue)), 1.0 if alpha is None else float(alpha)


def open_heatmap(page: Page, service: ServiceProcess) -> None:
    page.goto(service.url + "/")
    page.wait_for_function("document.getElementById('info').textContent.startsWith('Model ')")
    page.fill("#prompt", PROMPT)
    page.fill("#response", RESPONSE)


def score_and_wait(page: Page) -> None:
    page.evaluate("document.getElementById('heatmap').replaceChildren()")
    page.click("#score")
    page.wait_for_function("document.querySelectorAll('#heatmap span').length > 0 || "
                           "document.getElementById('error').textContent.length > 0")


def rendered_spans(page: Page) -> list[dict[str, str]]:
    return list(page.evaluate("""Array.from(document.querySelectorAll('#heatmap span')).map(s => ({
        text: s.textContent, title: s.title, background: getComputedStyle(s).backgroundColor}))"""))


def test_page_shows_service_info_and_an_auth_error_without_key(page: Page, heatmap_service: ServiceProcess) -> None:
    open_heatmap(page, heatmap_service)
    info = page.evaluate("document.getElementById('info').textContent")
    assert "contrasting-discriminator" in info and "cpu/float32" in info, info
    max_length = httpx.get(f"{heatmap_service.url}/info", timeout=30).json()["max_length"]
    assert info.endswith(f" · max {max_length} tokens"), info
    score_and_wait(page)
    error = page.evaluate("document.getElementById('error').textContent")
    assert error.startswith("HTTP 401"), error
    assert page.evaluate("document.querySelectorAll('#heatmap span').length") == 0
    assert page.evaluate("document.getElementById('score').disabled") is False


def test_heatmap_spans_match_the_api_and_are_coloured(page: Page, heatmap_service: ServiceProcess,
                                                      decode_png: Any, pixel_stats: Any) -> None:
    open_heatmap(page, heatmap_service)
    page.fill("#apikey", API_KEY)
    score_and_wait(page)
    assert page.evaluate("document.getElementById('error').textContent") == ""

    expected = api_rewards(heatmap_service, "continuous")
    spans = rendered_spans(page)
    assert [s["text"] for s in spans] == expected["tokens"]
    assert "".join(expected["tokens"]).strip() == RESPONSE.strip()
    for span, reward, probability in zip(spans, expected["rewards"], expected["probabilities"], strict=True):
        shown = re.search(r"r = (-?\d\.\d{3})  p = (\d\.\d{3})$", span["title"])
        assert shown is not None, span
        assert math.isclose(float(shown.group(1)), reward, abs_tol=1e-3), (span, reward)
        assert math.isclose(float(shown.group(2)), probability, abs_tol=1e-3), (span, probability)
        rgb, alpha = parse_rgba(span["background"])
        want_rgb, want_alpha = page_colour(reward, "continuous")
        assert rgb == want_rgb and math.isclose(alpha, want_alpha, abs_tol=0.01), (span, reward)
    signs = np.sign(expected["rewards"])
    assert (signs > 0).sum() >= 3 and (signs < 0).sum() >= 3, expected["rewards"]  # the sharpened head's contrast
    summary = page.evaluate("document.getElementById('summary').textContent")
    assert summary.startswith(f"{len(spans)} tokens · sum of rewards {sum(expected['rewards']):.3f}"), summary

    page_image = decode_png(page.screenshot())
    assert pixel_stats(page_image)["non_white"] > 0.01 and page_image.std() > 0.05, "blank page screenshot"
    heatmap = pixel_stats(decode_png(page.locator("#heatmap").screenshot()))
    assert heatmap["green"] > 0.02 and heatmap["red"] > 0.02, heatmap


def test_fixed_mode_colours_only_tokens_past_the_threshold(page: Page, heatmap_service: ServiceProcess) -> None:
    open_heatmap(page, heatmap_service)
    page.fill("#apikey", API_KEY)
    page.select_option("#mode", "fixed")
    page.fill("#threshold", "0.9")
    assert page.evaluate("[document.getElementById('mode').value, document.getElementById('threshold').value]") == [
        "fixed", "0.9"]
    score_and_wait(page)
    expected = api_rewards(heatmap_service, "fixed", threshold=0.9)
    assert set(expected["rewards"]) <= {-1.0, 0.0, 1.0} and 0.0 in expected["rewards"], expected["rewards"]
    spans = rendered_spans(page)
    assert [s["text"] for s in spans] == expected["tokens"]
    for span, reward in zip(spans, expected["rewards"], strict=True):
        rgb, alpha = parse_rgba(span["background"])
        assert math.isclose(alpha, 0.85 * abs(reward), abs_tol=0.01), (span, reward)
        if reward:
            assert rgb == page_colour(reward, "fixed")[0], (span, reward)
