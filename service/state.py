"""What one running service holds: settings, metrics, the loaded models and their batchers."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from tlcr.core.models import demo_note
from tlcr.service.batcher import DynamicBatcher
from tlcr.service.forward_process import ForwardProcessError, ProcessTokenScorer
from tlcr.service.items import Limits, longest_token_chars
from tlcr.service.metrics import ServiceMetrics
from tlcr.service.scorer import Encoded, LoadSpec, SequenceScorer, TokenScorer, describe, load_token_scorer
from tlcr.service.settings import ServiceSettings, public_name

logger = logging.getLogger(__name__)


async def run_in_daemon_thread(fn: Callable[[], Any], name: str) -> Any:
    """`fn()` in a daemon thread: unlike the default executor's threads, it does not hold up the process
    exiting (a SIGTERM in the middle of a long model load stops the service at once)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(error: BaseException | None, result: Any) -> None:
        if future.done():  # the waiter was cancelled (shutdown)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            outcome: tuple[BaseException | None, Any] = (None, fn())
        except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
            outcome = (exc, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the event loop is already closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


class ServiceState:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.token_scorer: TokenScorer | ProcessTokenScorer | None = None
        self.sequence_scorer: SequenceScorer | None = None
        self.token_batcher: DynamicBatcher[Encoded, np.ndarray] | None = None
        self.sequence_batcher: DynamicBatcher[Encoded, float] | None = None
        self.ready = False
        self.shutting_down = False
        self.load_error: str | None = None
        self.preparing = asyncio.Semaphore(settings.max_preparing)  # requests in worker threads at once
        self.on_fatal: Callable[[BaseException], None] | None = None  # the app's: the CLI exits then
        self._token_chars: dict[int, int] = {}

    def _load_models(self) -> None:
        # Blocking (minutes for 7B): runs in a thread while /healthz already answers.
        s = self.settings
        if s.torch_threads is not None:
            import torch

            torch.set_num_threads(s.torch_threads)
        spec = LoadSpec(s.model, device=s.device, dtype=s.dtype, max_length=s.max_length, name=s.served_model_name,
                        revision=s.revision, torch_threads=s.torch_threads, warmup=s.warmup, packing=s.packing,
                        prefix_sharing=s.prefix_sharing, log_level=logging.getLogger("tlcr").getEffectiveLevel(),
                        keep_freed_memory=s.keep_freed_memory)
        scorer = ProcessTokenScorer(spec) if s.forward_process else load_token_scorer(spec)
        logger.info("discriminator loaded: %s; packing %s, prefix sharing %s; forwards in %s", describe(scorer),
                    "on" if scorer.packing else "off", "on" if scorer.prefix_sharing else "off",
                    f"a process of their own (pid {scorer.forward_process.pid})"
                    if isinstance(scorer, ProcessTokenScorer) else "a worker thread")
        if note := demo_note(scorer.config):
            logger.warning("serving the DEMO discriminator: %s", note)
        sequence_scorer = None
        if s.sequence_model:
            sequence_scorer = SequenceScorer.load(s.sequence_model, device=s.device, dtype=s.dtype,
                                                  max_length=s.max_length, name=public_name(s.sequence_model))
            if s.warmup:
                sequence_scorer.warm_up()
            logger.info("sequence reward model loaded: %s", describe(sequence_scorer))
        for loaded in (scorer, sequence_scorer):  # the character bound of each tokenizer, computed once
            if loaded is not None:
                self.limits(loaded)
        self.token_scorer, self.sequence_scorer = scorer, sequence_scorer

    def _batcher(self, forward: Callable[[list[Encoded]], list[Any]], name: str,
                 share_prompts: bool = False, packed: bool = False) -> DynamicBatcher[Encoded, Any]:
        s = self.settings
        return DynamicBatcher(forward, lambda e: e.length, token_budget=s.token_budget,
                              max_batch_size=s.max_batch_size, max_wait_s=s.max_wait_ms / 1000.0,
                              adaptive_wait=s.adaptive_wait,
                              max_queue=s.max_queue_items, observer=self.metrics.observer(name), name=name,
                              prompt_of=Encoded.prompt_share if share_prompts else None, packed=packed)

    async def load(self) -> None:
        """Load models, warm up, start the batchers; then the service is ready."""
        await run_in_daemon_thread(self._load_models, "tlcr-load-models")
        # The ~200k objects of torch, transformers and the model live as long as the process: frozen, every
        # later garbage collection skips them instead of walking them all (which made parsing a large JSON
        # body several times slower; see service/json_route.py).
        gc.collect()
        gc.freeze()
        assert self.token_scorer is not None
        if isinstance(self.token_scorer, ProcessTokenScorer):
            # A dead forward process (killed, out of memory) takes the service out of rotation at once: /readyz
            # answers 503 naming why, and under `tlcr serve` the process exits, to be restarted.
            loop = asyncio.get_running_loop()

            def died(exc: ForwardProcessError) -> None:  # from the watching thread
                try:
                    loop.call_soon_threadsafe(self._forward_process_died, exc)
                except RuntimeError:  # the event loop has closed: the service is gone anyway
                    pass

            self.token_scorer.forward_process.watch(died)
        self.token_batcher = self._batcher(self.token_scorer.probabilities, "discriminator",
                                           share_prompts=self.token_scorer.prefix_sharing,
                                           packed=self.token_scorer.packing)
        self.token_batcher.start()
        if self.sequence_scorer is not None:
            self.sequence_batcher = self._batcher(self.sequence_scorer.scores, "sequence_rm")
            self.sequence_batcher.start()
        self.ready = True

    def _forward_process_died(self, exc: ForwardProcessError) -> None:
        if self.load_error is not None or self.shutting_down:
            return
        self.ready = False
        self.load_error = str(exc)
        logger.error("%s: the service cannot score any more", exc)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    async def close(self) -> None:
        """Finish queued work and stop the batchers (uvicorn has already drained open requests)."""
        self.shutting_down = True
        self.ready = False
        for batcher in (self.token_batcher, self.sequence_batcher):
            if batcher is not None:
                await batcher.close()
        if isinstance(self.token_scorer, ProcessTokenScorer):  # after its last forward
            await asyncio.to_thread(self.token_scorer.close)

    def limits(self, scorer: TokenScorer | ProcessTokenScorer | SequenceScorer) -> Limits:
        key = id(scorer.tokenizer)
        if key not in self._token_chars:
            self._token_chars[key] = longest_token_chars(scorer.tokenizer)
        return Limits(vocab_size=scorer.vocab_size, max_length=scorer.max_length,
                      truncation=self.settings.truncation,
                      max_chars=scorer.max_length * self._token_chars[key],
                      max_offsets=self.settings.max_offsets_per_item)
