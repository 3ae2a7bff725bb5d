"""The heatmap page's script, run by Node against the real service with a minimal DOM stand-in:
it fetches /info and /token_rewards and builds one coloured span per token with r and p in its title."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from service.launcher import ServiceProcess
from service.routers.ui import heatmap_html

DOM_SHIM = r"""
const elements = {};
class Element {
  constructor(id) { this.id = id; this.value = ""; this.textContent = ""; this.children = []; this.style = {};
                    this.title = ""; this.disabled = false; this.listeners = {}; }
  addEventListener(kind, fn) { this.listeners[kind] = fn; }
  appendChild(child) { this.children.push(child); }
  replaceChildren() { this.children = []; }
}
globalThis.document = {
  getElementById: (id) => (elements[id] ??= new Element(id)),
  createElement: (tag) => new Element(tag),
};
globalThis.sessionStorage = { store: {}, getItem(k) { return this.store[k] ?? null; },
                              setItem(k, v) { this.store[k] = v; } };
const base = process.env.SERVICE_URL + "/";
const realFetch = globalThis.fetch;
globalThis.fetch = (path, options) => realFetch(new URL(path, base), options);
"""

RUN = r"""
(async () => {
  document.getElementById("prompt").value = "\n\nHuman: Hi\n\nAssistant:";
  document.getElementById("response").value = " The capital of Nesolland is Umlodun.";
  document.getElementById("mode").value = "continuous";
  document.getElementById("threshold").value = "0.6";
  await new Promise((r) => setTimeout(r, 300));  // loadInfo()
  await document.getElementById("score").listeners.click();
  const spans = document.getElementById("heatmap").children;
  console.log(JSON.stringify({
    info: document.getElementById("info").textContent,
    error: document.getElementById("error").textContent,
    summary: document.getElementById("summary").textContent,
    tokens: spans.map((s) => s.textContent), titles: spans.map((s) => s.title),
    backgrounds: spans.map((s) => s.style.background),
  }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_heatmap_script_renders_tokens_from_the_service(shared_service: ServiceProcess) -> None:
    script = re.search(r"<script>(.*)</script>", heatmap_html(), re.S)
    assert script is not None
    program = DOM_SHIM + script.group(1) + RUN
    done = subprocess.run([shutil.which("node") or "node", "-e", program], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SERVICE_URL": shared_service.url})
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert page["error"] == ""
    assert page["info"].startswith("Model ") and "max 256 tokens" in page["info"]
    assert "".join(page["tokens"]) == " The capital of Nesolland is Umlodun."
    assert all(re.search(r"r = -?\d\.\d{3}  p = \d\.\d{3}", t) for t in page["titles"])
    assert all(b.startswith(("rgba(26,150,65", "rgba(215,25,28")) for b in page["backgrounds"])
    assert f"{len(page['tokens'])} tokens" in page["summary"]
