"""The discriminator's forwards in a process of their own, so the HTTP event loop never shares a GIL with them.

In one process the event loop (parsing, validation, responses) and the forward thread take turns on the GIL:
every torch call that returns to Python waits while the loop runs. With `--forward-process` the model lives in
a child process (vLLM's API server and engine core are split the same way); the batcher's worker thread sends
each batch's token ids over a pipe and blocks, without the GIL, until the probabilities come back.

The child loads the checkpoint exactly as the in-process path does (`load_token_scorer`: warm-up, the packing
and prefix-sharing probes, freed memory kept) and reports what it serves. It exits when the pipe closes or its
parent is gone, so it never outlives the service, even one killed by SIGKILL.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from tlcr.core.logs import setup_logging
from tlcr.core.models import load_tokenizer
from tlcr.service.scorer import Encoded, LoadSpec, load_token_scorer

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 3600.0  # loading 7B from a slow disk can take many minutes
PARENT_POLL_S = 0.5
# The tlcr package's logging level → the verbosity that sets it (tlcr.core.logs.package_level).
_VERBOSITY_OF_LEVEL = {logging.ERROR: -2, logging.WARNING: -1, logging.INFO: 0, logging.DEBUG: 1}


class ForwardProcessError(RuntimeError):
    """The forward process failed to start or died; the message says how."""


def _exit_with_parent(parent_pid: int) -> None:
    """Exit once the service is gone, even while still loading (then no pipe read would notice)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _serve(connection: Connection, spec: LoadSpec, parent_pid: int) -> None:
    """The child: load, report, then answer batches until the pipe closes."""
    # The service decides when to stop (it closes the pipe after its graceful shutdown): a Ctrl-C or a SIGTERM
    # sent to the whole process group must not end forwards that requests in flight still wait for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    setup_logging(_VERBOSITY_OF_LEVEL.get(spec.log_level, 0))
    import torch

    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    try:
        scorer = load_token_scorer(spec)
    except BaseException as exc:  # reported to the parent, which fails its load with it
        connection.send(("error", _portable(exc)))
        return
    connection.send(("ready", {
        "name": scorer.name, "revision": scorer.revision, "device": str(scorer.device), "dtype": str(scorer.dtype),
        "vocab_size": scorer.vocab_size, "max_length": scorer.max_length, "pad_id": scorer.pad_id,
        "config": scorer.config, "packing": scorer.packing, "prefix_sharing": scorer.prefix_sharing}))
    while True:
        try:
            batch = connection.recv()
        except (EOFError, OSError):  # the service closed the pipe or died
            return
        try:
            reply: tuple[str, Any] = ("ok", scorer.probabilities([Encoded(p, r) for p, r in batch]))
        except Exception as exc:  # the batch's callers get it; the process keeps serving
            logger.exception("forward of %d sequences failed", len(batch))
            reply = ("error", _portable(exc))
        try:
            connection.send(reply)
        except OSError:  # the service is gone
            return


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it pickles, else a RuntimeError naming it."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class ForwardProcess:
    """A child process holding the discriminator; `probabilities(batch)` as `TokenScorer.probabilities`.

    Calls block and must come one at a time (the batcher's single worker thread does this).
    """

    def __init__(self, spec: LoadSpec) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and torch
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, spec, os.getpid()), name="tlcr-forward",
                                        daemon=True)
        self._process.start()
        child.close()  # only the child holds its end: the parent sees EOF if the child dies
        self._lock = threading.Lock()
        self._closing = False
        kind, payload = self._receive(START_TIMEOUT_S, "loading the model")
        if kind == "error":
            self.close()
            raise payload
        self.loaded: dict[str, Any] = payload  # what the child serves (see _serve)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _receive(self, timeout: float | None, doing: str) -> tuple[str, Any]:
        try:
            if timeout is not None and not self._connection.poll(timeout):
                raise ForwardProcessError(f"the forward process did not answer within {timeout:g} s ({doing})")
            return self._connection.recv()
        except (EOFError, OSError) as exc:
            self._process.join(5)
            raise ForwardProcessError(f"the forward process died while {doing} (exit code "
                                      f"{self._process.exitcode})") from exc

    def probabilities(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        """P(positive) per response token, computed in the child."""
        if not batch:
            return []
        with self._lock:
            try:
                self._connection.send([(e.prompt_ids, e.response_ids) for e in batch])
            except (OSError, ValueError) as exc:
                raise ForwardProcessError(f"the forward process is gone (exit code {self._process.exitcode})") \
                    from exc
            kind, payload = self._receive(None, f"scoring a batch of {len(batch)}")
        if kind == "error":
            raise payload
        return payload

    def watch(self, on_death: Callable[[ForwardProcessError], None]) -> None:
        """Call `on_death` (from a daemon thread) if the child exits before `close()`: killed, out of memory."""

        def wait() -> None:
            multiprocessing.connection.wait([self._process.sentinel])
            if not self._closing:
                on_death(ForwardProcessError(f"the forward process died (exit code {self._process.exitcode})"))

        threading.Thread(target=wait, name="tlcr-forward-watch", daemon=True).start()

    def close(self, timeout: float = 10.0) -> None:
        """Close the pipe (the child exits on it), then wait; kill it if it does not go."""
        self._closing = True
        self._connection.close()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class ProcessTokenScorer:
    """The token discriminator served from a `ForwardProcess`: what `TokenScorer` offers the service (its
    tokenizer, name, revision, limits, `probabilities`), with the weights only in the child."""

    def __init__(self, spec: LoadSpec) -> None:
        self.forward_process = ForwardProcess(spec)
        loaded = self.forward_process.loaded
        try:
            self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(spec.model)
        except BaseException:
            self.forward_process.close()
            raise
        self.name: str = loaded["name"]
        self.revision: str | None = loaded["revision"]
        self.device: str = loaded["device"]
        self.dtype: str = loaded["dtype"]
        self.vocab_size: int = loaded["vocab_size"]
        self.max_length: int = loaded["max_length"]
        self.pad_id: int = loaded["pad_id"]
        self.config: PretrainedConfig = loaded["config"]
        self.packing: bool = loaded["packing"]
        self.prefix_sharing: bool = loaded["prefix_sharing"]

    def probabilities(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        """P(positive) per response token, float32 numpy, one array per item (computed in the child)."""
        return self.forward_process.probabilities(batch)

    def close(self) -> None:
        self.forward_process.close()
