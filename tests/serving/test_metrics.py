"""Ingress-process details that decide the p99 tail: GC pause timing, and the body-size middleware (plain ASGI,
no per-request reference cycles), both without Ray."""
import asyncio
import gc
import json

from serving.metrics import ServingMetrics

LIMIT = 16_384  # BodyLimit's limit while no IngressCore is active in the process


def test_gc_pauses_are_timed_per_generation():
    m = ServingMetrics()
    count = lambda: m.registry.get_sample_value("t2diff_serve_gc_pause_seconds_count", {"generation": "2"})  # noqa: E731
    m.watch_gc()
    m.watch_gc()  # idempotent: one callback
    try:
        gc.collect()
        assert count() == 1
        assert m.registry.get_sample_value("t2diff_serve_gc_pause_seconds_sum", {"generation": "2"}) > 0
        gc.collect(0)
        assert m.registry.get_sample_value("t2diff_serve_gc_pause_seconds_count", {"generation": "0"}) == 1
    finally:
        m.unwatch_gc()
    gc.collect()
    assert count() == 1


def _call(body_chunks, headers=(), method="POST"):
    """Run one request through BodyLimit in front of an echo app; (status, body bytes, what the app received)."""
    from serving.deployments import BodyLimit

    got = []

    async def echo(scope, receive, send):
        data = b""
        while True:
            m = await receive()
            data += m.get("body", b"")
            if not m.get("more_body"):
                break
        got.append(data)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": data})

    msgs = [{"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
            for i, c in enumerate(body_chunks)] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        return msgs.pop(0) if msgs else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": method, "path": "/recall", "headers": list(headers), "query_string": b""}
    asyncio.run(BodyLimit(echo)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), got


def test_body_limit_with_and_without_content_length():
    small, big = b'{"user_id": 1}', b"x" * (LIMIT + 1)
    # with content-length: decided from the header alone
    assert _call([small], [(b"content-length", str(len(small)).encode())])[:2] == (200, small)
    status, body, got = _call([big], [(b"content-length", str(len(big)).encode())])
    assert status == 413 and "larger than 16384" in json.loads(body)["error"] and got == []
    assert _call([small], [(b"content-length", b"12abc")])[0] == 413  # garbled length
    # chunked (no length): read first, then handed on whole, or refused
    status, body, got = _call([small[:5], small[5:]])
    assert status == 200 and got == [small]
    status, _, got = _call([b"x" * 10_000, b"x" * 10_000])
    assert status == 413 and got == []
    assert _call([], method="GET")[0] == 200


def test_body_limit_makes_no_reference_cycles():
    """@app.middleware("http") (Starlette's BaseHTTPMiddleware) left ~40 cyclic objects per request (task group,
    cancel scope, CancelledError, traceback); their collection stalled the ingress under load."""
    _call([b"{}"], [(b"content-length", b"2")])  # warm-up: imports, lazily built objects
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            _call([b"{}"], [(b"content-length", b"2")])
        assert gc.collect() == 0
    finally:
        gc.enable()
