"""Two replicas behind Ray Serve: requests spread over both, /metrics sums them, a replica killed in the middle
of a stream of requests is replaced by Ray while our client (and OpenRLHF's own remote-RM client) lose no
request, and /readyz is not ready while no replica is."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integrations.conftest import engine
from tests.service.ray.conftest import require_ray
from tests.support.processes import wait_until_gone
from tests.support.ray_serve import RayServe, start_ray_serve
from tlcr.service.client import TokenRewardClient
from tlcr.service.schemas import TokenRewardItem

require_ray()

from tlcr.service.ray_app import METRICS_STALE_S, REPLICA_HEADER  # noqa: E402

PROMPT = "\n\nHuman: Where does Bob live?\n\nAssistant:"
RESPONSE = " Bob lives in Paris."
REPLACED_WITHIN_S = 180.0  # measured about 10 s on 2 busy cores (docs/deploy.md); a wide margin


@pytest.fixture(scope="module")
def two_replicas(tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServe]:
    log = tmp_path_factory.mktemp("logs") / "ray-two-replicas.log"
    with start_ray_serve(tiny_token_classifier_dir, log, replicas=2, args=["--max-wait-ms", "2"]) as service:
        yield service


def metric(url: str, line_start: str) -> float | None:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_requests_spread_over_replicas_and_metrics_sum_them(two_replicas: RayServe) -> None:
    url = two_replicas.url
    before = metric(url, 'tlcr_requests_total{route="/token_rewards",status="200"}') or 0.0
    body = {"items": [{"prompt": PROMPT, "response": RESPONSE}]}
    with httpx.Client(base_url=url, timeout=30) as http:
        answered_by = {http.post("/token_rewards", json=body).headers[REPLICA_HEADER] for _ in range(40)}
    assert len(answered_by) == 2
    time.sleep(2.5)  # every replica has pushed its metrics since
    assert metric(url, "tlcr_replicas_reporting") == 2.0
    assert metric(url, 'tlcr_requests_total{route="/token_rewards",status="200"}') == before + 40


def kill_replica(service: RayServe, pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert not wait_until_gone({pid}, timeout_s=10)
    return killed_at


def test_a_replica_killed_mid_stream_loses_no_request(two_replicas: RayServe, tiny_token_classifier_dir: Path) -> None:
    url = two_replicas.url
    victim = two_replicas.replica_pids()[0]
    stop = threading.Event()
    failures: list[str] = []
    done = [0]
    lock = threading.Lock()

    def our_client() -> None:
        with TokenRewardClient(url, timeout=60) as client:
            while not stop.is_set():
                try:
                    [result] = client.token_rewards([TokenRewardItem(prompt=PROMPT, response=RESPONSE)])
                    assert len(result.rewards) > 0
                    with lock:
                        done[0] += 1
                except Exception as exc:
                    failures.append(f"tlcr client: {type(exc).__name__}: {exc}")

    def openrlhf_client() -> None:
        # OpenRLHF's own remote-RM path (SingleTurnAgentExecutor: 5 tries, 1 s apart, on any HTTP error).
        agent = engine("openrlhf.utils.agent")
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=url + "/get_reward")  # type: ignore[attr-defined]
        while not stop.is_set():
            try:
                [reply] = asyncio.run(executor._fetch_rewards_via_http([PROMPT + RESPONSE], [PROMPT], [""]))
                assert len(reply["rewards"]) == 1
            except Exception as exc:
                failures.append(f"OpenRLHF: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=our_client) for _ in range(3)] + [threading.Thread(target=openrlhf_client)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        before = set(two_replicas.replica_pids())
        killed_at = kill_replica(two_replicas, victim)
        served_before = done[0]
        while set(two_replicas.replica_pids()) - before == set():  # Ray starts a replacement process
            assert time.monotonic() - killed_at < REPLACED_WITHIN_S, two_replicas.log_tail()
            time.sleep(0.2)
        new_pid = (set(two_replicas.replica_pids()) - before).pop()
        # Two replicas report again once the dead one's last snapshot has expired: the replacement is serving.
        while (time.monotonic() - killed_at <= METRICS_STALE_S + 1
               or metric(url, "tlcr_replicas_reporting") != 2.0):
            assert time.monotonic() - killed_at < REPLACED_WITHIN_S, two_replicas.log_tail()
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    assert done[0] > served_before  # the stream went on while the replica was down and replaced
    assert new_pid in two_replicas.replica_pids()


def test_readyz_is_not_ready_while_no_replica_is(two_replicas: RayServe) -> None:
    url = two_replicas.url
    before = set(two_replicas.replica_pids())
    for pid in before:
        kill_replica(two_replicas, pid)
    try:
        status = httpx.get(url + "/readyz", timeout=2).status_code
    except httpx.TimeoutException:
        status = None  # the proxy holds the request until a replica runs: a probe's timeout, not ready
    assert status != 200
    deadline = time.monotonic() + REPLACED_WITHIN_S
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, two_replicas.log_tail()
        time.sleep(0.5)
    assert not before & set(two_replicas.replica_pids())
