"""Dynamic batching: concurrent requests are grouped, a lone request leaves after max_wait, a full queue is 429."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from test_api import STUDY, TOKENS, FakeBackend, FakePacs, W, body, fake_decode_dicom, fake_model

from serving.batching import BatcherClosed, MicroBatcher, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_grouped_into_batches():
    seen = []

    def fn(items):
        seen.append(len(items))
        time.sleep(0.02)
        return [i * 2 for i in items]

    async def main():
        batcher = await MicroBatcher(fn, max_batch=8, max_wait_ms=200, max_queue=64).start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.close()
        return results

    assert run(main()) == [i * 2 for i in range(20)]
    assert seen == [8, 8, 4]       # full batches leave at once; the remainder after max_wait


def test_a_lone_request_is_flushed_after_max_wait_and_late_joiners_ride_along():
    seen = []

    def fn(items):
        seen.append(len(items))
        return items

    async def main():
        batcher = await MicroBatcher(fn, max_batch=8, max_wait_ms=100, max_queue=8).start()
        started = time.perf_counter()
        await batcher.submit("alone")
        alone = time.perf_counter() - started

        async def late(delay, item):
            await asyncio.sleep(delay)
            return await batcher.submit(item)

        started = time.perf_counter()
        pair = await asyncio.gather(batcher.submit("first"), late(0.03, "second"))
        together = time.perf_counter() - started
        await batcher.close()
        return alone, pair, together

    alone, pair, together = run(main())
    assert 0.09 <= alone < 1.0
    assert pair == ["first", "second"] and 0.09 <= together < 1.0
    assert seen == [1, 2]


def test_full_queue_raises_queue_full_with_retry_after():
    release = threading.Event()

    def fn(items):
        release.wait(5)
        return items

    async def main():
        batcher = await MicroBatcher(fn, max_batch=2, max_wait_ms=0, max_queue=3).start()
        in_flight = [asyncio.ensure_future(batcher.submit(i)) for i in range(2)]
        await asyncio.sleep(0.05)                     # the first batch is now running (blocked)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 5)]
        await asyncio.sleep(0.01)
        assert batcher.queue_depth == 3
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(99)
        release.set()
        done = await asyncio.gather(*in_flight, *queued)
        await batcher.close()
        return refused.value, done

    refused, done = run(main())
    assert refused.retry_after >= 1 and "queue is full" in str(refused)
    assert done == [0, 1, 2, 3, 4]


def test_a_failing_item_fails_alone_and_cancelled_requests_are_dropped():
    seen = []
    release = threading.Event()

    def fn(items):
        seen.append(list(items))
        if items == ["block"]:
            release.wait(5)
        if "bad" in items:
            raise ValueError("bad item")
        return [f"ok:{i}" for i in items]

    async def main():
        batcher = await MicroBatcher(fn, max_batch=4, max_wait_ms=20, max_queue=8).start()
        blocker = asyncio.ensure_future(batcher.submit("block"))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit("gone"))
        await asyncio.sleep(0.01)
        gone.cancel()                                   # the client went away while queued
        rest = [asyncio.ensure_future(batcher.submit(x)) for x in ("a", "bad", "b")]
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(blocker, *rest, return_exceptions=True)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit("late")
        return results

    results = run(main())
    assert results[0] == "ok:block" and results[1] == "ok:a" and results[3] == "ok:b"
    assert isinstance(results[2], ValueError)
    assert not any("gone" in batch for batch in seen)
    assert ["a", "bad", "b"] in seen and ["a"] in seen and ["bad"] in seen   # batch failed → one by one


def test_several_workers_run_batches_at_once_and_share_the_due_items():
    """2 workers: 8 waiting items leave as two batches of 4 that run concurrently; close() lets both finish."""
    seen, active, peak = [], [0], [0]
    lock = threading.Lock()

    def fn(items):
        with lock:
            seen.append(len(items))
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        with lock:
            active[0] -= 1
        return [i + 100 for i in items]

    async def main():
        batcher = await MicroBatcher(fn, max_batch=8, max_wait_ms=50, max_queue=64, workers=2).start()
        started = time.perf_counter()
        first = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        both = time.perf_counter() - started
        more = [asyncio.ensure_future(batcher.submit(i)) for i in range(8, 20)]
        await asyncio.sleep(0.08)                       # 12 waiting: batches of 6 + 6 are running now
        await batcher.close()                           # waits for them
        return first, both, [f.result() for f in more]

    first, both, more = run(main())
    assert first == [i + 100 for i in range(8)] and more == [i + 100 for i in range(8, 20)]
    assert seen == [4, 4, 6, 6] and peak[0] == 2
    assert both < 0.29                                  # concurrently (one after the other: ≥ 0.30 s)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(fn, workers=0)


async def _with_app(app, fn):
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            return await fn(client)


def _app(tmp_path, backend, **kwargs):
    from serving.app import create_app

    return create_app(model=fake_model(backend), pacs_client=FakePacs(), tokens=TOKENS,
                      decode_dicom=fake_decode_dicom, audit_log=tmp_path / "audit.jsonl", **kwargs)


def test_http_requests_are_batched_and_batch_sizes_are_exported(tmp_path):
    backend = FakeBackend(delay=0.05)
    app = _app(tmp_path, backend)

    async def scenario(client):
        responses = await asyncio.gather(*(client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
                                           for _ in range(12)))
        metrics = (await client.get("/metrics")).text
        return [r.status_code for r in responses], metrics

    statuses, metrics = run(_with_app(app, scenario))
    assert statuses == [200] * 12
    assert sum(backend.batches) == 12 and max(backend.batches) > 1 and len(backend.batches) < 12
    assert "rrg_batch_size_count %s" % float(len(backend.batches)) in metrics
    assert "rrg_batch_size_sum 12.0" in metrics


def test_http_queue_full_is_429_with_retry_after_and_the_service_recovers(tmp_path):
    backend = FakeBackend(delay=0.3)
    app = _app(tmp_path, backend, max_batch=1, max_wait_ms=0, max_queue=2)

    async def scenario(client):
        burst = await asyncio.gather(*(client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
                                       for _ in range(8)))
        after = await client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        metrics = (await client.get("/metrics")).text
        return burst, after, metrics

    burst, after, metrics = run(_with_app(app, scenario))
    refused = [r for r in burst if r.status_code == 429]
    assert refused and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert "queue is full" in refused[0].json()["detail"]
    assert {r.status_code for r in burst} == {200, 429}
    assert after.status_code == 200
    assert f"rrg_queue_rejected_total {float(len(refused))}" in metrics
