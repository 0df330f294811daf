"""The micro-batcher alone: merging, order, token budget, cancellation, errors and draining."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

from sentemb.encoder import EncodeResult
from sentemb.errors import InvalidTextError, TextTooLongError
from sentemb.server.admission import Lateness, Throughput, pushes_past_deadline, queue_delay
from sentemb.server.batcher import BatcherClosed, MicroBatcher, ModelFailed, QueueFull
from sentemb.tokenize import TextInfo


def vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 997)]


class Recorder:
    """A fake encode: one row per text derived from the text, and a log of every call."""

    def __init__(self, fail_on: str | None = None, too_long: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.too_long = too_long

    def __call__(self, texts: list[str], prompt: str = "") -> EncodeResult:
        self.calls.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("boom")
        if self.too_long in texts:
            index = texts.index(self.too_long)
            raise TextTooLongError("too long", index, 999)
        return EncodeResult(
            np.array([vector(t) for t in texts], dtype=np.float32), [TextInfo(len(t), False) for t in texts]
        )


def make(encode: Recorder, **options: object) -> MicroBatcher:
    settings = {"queue_size": 100, "micro_batch_tokens": 1000, "max_wait_s": 0.02, **options}
    return MicroBatcher(encode, len, **settings)  # type: ignore[arg-type]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_concurrent_jobs_merge_into_one_call_and_keep_their_rows():
    async def main():
        rec = Recorder()
        batcher = make(rec)
        batcher.start()
        jobs = [["a", "bb"], ["ccc"], ["dddd", "e", "ff"]]
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.close()
        return rec, jobs, results

    rec, jobs, results = run(main())
    assert rec.calls == [["a", "bb", "ccc", "dddd", "e", "ff"]]
    for job, rows in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(rows.embeddings, np.array([vector(t) for t in job], dtype=np.float32))
        assert [i.num_tokens for i in rows.info] == [len(t) for t in job]


def test_micro_batch_tokens_splits_batches_in_order():
    async def main():
        rec = Recorder()
        batcher = make(rec, micro_batch_tokens=10)
        batcher.start()
        await asyncio.gather(*(batcher.submit([c * 6]) for c in "xyz"))  # 6 estimated tokens each
        await batcher.close()
        return rec

    assert run(main()).calls == [["xxxxxx"], ["yyyyyy"], ["zzzzzz"]]


def test_an_idle_model_takes_a_lone_job_at_once():
    """No micro-batch wait while the model is idle: a max_wait of minutes does not delay a lone request,
    the first or one sent after an earlier one was answered, with one stream or several (the 10 s deadline
    of run() only turns a wait into a failure)."""

    async def main(concurrency: int):
        rec = Recorder()
        batcher = make(rec, max_wait_s=600.0, concurrency=concurrency)
        batcher.start()
        rows = [await batcher.submit([text]) for text in ("solo", "next", "third")]
        await batcher.close()
        return rec, rows

    for concurrency in (1, 2):
        rec, rows = run(main(concurrency))
        assert rec.calls == [["solo"], ["next"], ["third"]] and [len(r.info) for r in rows] == [1, 1, 1]


def test_while_the_model_is_busy_new_jobs_wait_for_company():
    """With every stream busy, jobs that arrive meanwhile are merged into the next batch."""
    entered, gate = threading.Event(), threading.Event()
    rec = Recorder()

    def held(texts: list[str], prompt: str = "") -> EncodeResult:
        if texts == ["first"]:
            entered.set()
            if not gate.wait(10):
                raise RuntimeError("the test never opened the gate")
        return rec(texts, prompt)

    async def main():
        batcher = make(held, max_wait_s=600.0)  # type: ignore[arg-type]
        batcher.start()
        first = batcher.submit(["first"])
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        later = [batcher.submit(["second"]), batcher.submit(["third"])]
        gate.set()
        await asyncio.gather(first, *later)
        await batcher.close()

    run(main())
    assert rec.calls == [["first"], ["second", "third"]]


def test_queue_bound_counts_inputs_and_refuses_at_once():
    async def main():
        batcher = make(Recorder(), queue_size=5)  # not started: nothing leaves the queue
        first = batcher.submit(["a", "b", "c"])
        with pytest.raises(QueueFull):
            batcher.submit(["d", "e", "f"])
        second = batcher.submit(["d", "e"])
        assert batcher.queued_inputs == 5
        first.cancel()
        await asyncio.sleep(0)  # done-callbacks run on the next loop turn
        assert batcher.queued_inputs == 2
        batcher.submit(["g"])
        second.cancel()
        await asyncio.sleep(0)
        return batcher.queued_inputs

    assert run(main()) == 1


def test_cancelled_job_never_reaches_the_model():
    async def main():
        rec = Recorder()
        batcher = make(rec)
        dropped = batcher.submit(["dropped"])
        kept = batcher.submit(["kept"])
        dropped.cancel()
        batcher.start()
        rows = await kept
        await batcher.close()
        return rec, rows

    rec, rows = run(main())
    assert rec.calls == [["kept"]]
    assert rows.embeddings.shape == (1, 2)


def test_too_long_text_fails_only_its_request():
    async def main():
        rec = Recorder(too_long="LONG")
        batcher = make(rec)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(["ok1"]), batcher.submit(["fine", "LONG"]), batcher.submit(["ok2"]), return_exceptions=True
        )
        await batcher.close()
        return rec, results

    rec, (a, bad, c) = run(main())
    assert isinstance(bad, TextTooLongError)
    assert bad.index == 1  # its index inside its own request, not inside the merged batch
    assert a.embeddings.shape == c.embeddings.shape == (1, 2)
    assert rec.calls[-1] == ["ok1", "ok2"]


def test_a_failed_batch_fails_its_requests_and_the_worker_goes_on():
    async def main():
        rec = Recorder(fail_on="bad")
        batcher = make(rec, max_wait_s=0.0)
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit(["bad"])
        rows = await batcher.submit(["good"])
        await batcher.close()
        return rows

    assert run(main()).embeddings.shape == (1, 2)


def test_a_failing_merged_call_is_rerun_per_request_so_only_the_guilty_one_fails():
    async def main():
        rec = Recorder(fail_on="bad")
        batcher = make(rec)
        futures = [batcher.submit(["a", "b"]), batcher.submit(["x", "bad"]), batcher.submit(["c"])]
        batcher.start()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return rec, outcomes

    rec, (first, bad, last) = run(main())
    assert rec.calls == [["a", "b", "x", "bad", "c"], ["a", "b"], ["x", "bad"], ["c"]]
    assert isinstance(bad, ModelFailed)
    np.testing.assert_allclose(first.embeddings, [vector("a"), vector("b")])
    np.testing.assert_allclose(last.embeddings, [vector("c")])


def test_an_invalid_text_fails_only_its_own_request():
    class Refusing(Recorder):
        def __call__(self, texts, prompt=""):
            self.calls.append(list(texts))
            if "\ud800" in texts:
                raise InvalidTextError("not valid Unicode", texts.index("\ud800"), 0)
            return super().__call__(texts)

    async def main():
        rec = Refusing()
        batcher = make(rec)
        futures = [batcher.submit(["ok"]), batcher.submit(["fine", "\ud800"])]
        batcher.start()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return outcomes

    good, bad = run(main())
    assert isinstance(bad, InvalidTextError) and bad.index == 1  # its index in its own request
    np.testing.assert_allclose(good.embeddings, [vector("ok")])


def test_close_finishes_queued_work_then_refuses():
    async def main():
        rec = Recorder()
        batcher = make(rec, micro_batch_tokens=3)
        futures = [batcher.submit([c * 3]) for c in "abcd"]
        batcher.start()
        await batcher.close()
        assert all(f.done() and not f.cancelled() for f in futures)
        with pytest.raises(BatcherClosed):
            batcher.submit(["late"])
        return rec

    assert run(main()).calls == [["aaa"], ["bbb"], ["ccc"], ["ddd"]]


def test_concurrency_runs_micro_batches_side_by_side_and_close_waits_for_all():
    import threading

    class Meeting(Recorder):
        """Each call waits at a barrier of ``parties``: it passes only if that many calls run at once."""

        def __init__(self, parties: int) -> None:
            super().__init__()
            self.barrier = threading.Barrier(parties, timeout=20)

        def __call__(self, texts, prompt=""):
            self.barrier.wait()  # raises BrokenBarrierError if the calls never overlap
            return super().__call__(texts)

    async def main(concurrency):
        rec = Meeting(concurrency)
        batcher = make(rec, micro_batch_tokens=4, max_wait_s=0.0, concurrency=concurrency)  # one job per batch
        batcher.start()
        jobs = [["aaaa"], ["bbbb"], ["cccc"], ["dddd"]]
        futures = [batcher.submit(j) for j in jobs]
        await batcher.close()  # drains: every queued job still gets its rows
        return rec, jobs, [f.result() for f in futures]

    for concurrency in (1, 2):
        rec, jobs, results = run(main(concurrency))
        assert sorted(rec.calls) == jobs
        for job, rows in zip(jobs, results, strict=True):
            np.testing.assert_array_equal(rows.embeddings, [vector(t) for t in job])


def test_a_large_request_is_sliced_and_a_small_one_gets_the_next_turn():
    async def main():
        rec = Recorder()
        batcher = make(rec, micro_batch_tokens=8)
        big = batcher.submit(["aaaa"] * 6)  # 24 tokens: three micro-batches' worth
        small = batcher.submit(["b"])
        batcher.start()
        rows = await big
        await small
        await batcher.close()
        return rec, rows

    rec, rows = run(main())
    assert rec.calls[0] == ["aaaa", "b"]  # a fair share each: the small request is in the first batch
    assert [len(call) for call in rec.calls] == [2, 2, 2, 1]
    np.testing.assert_array_equal(rows.embeddings, [vector("aaaa")] * 6)  # reassembled in order
    assert len(rows.info) == 6


def test_the_rows_of_a_sliced_request_come_back_in_order():
    async def main():
        rec = Recorder()
        batcher = make(rec, micro_batch_tokens=5)
        texts = [c * (1 + i % 3) for i, c in enumerate("abcdefghij")]
        futures = [batcher.submit(texts), batcher.submit(["x", "yy"]), batcher.submit(["zzz"])]
        batcher.start()
        results = await asyncio.gather(*futures)
        await batcher.close()
        return texts, results, rec

    texts, (rows, other, last), rec = run(main())
    assert len(rec.calls) > 3
    np.testing.assert_array_equal(rows.embeddings, [vector(t) for t in texts])
    assert [i.num_tokens for i in rows.info] == [len(t) for t in texts]
    np.testing.assert_array_equal(other.embeddings, [vector("x"), vector("yy")])
    np.testing.assert_array_equal(last.embeddings, [vector("zzz")])


def test_admission_refuses_work_past_the_latency_budget_unless_the_server_is_idle():
    async def main():
        batcher = make(Recorder(), queue_size=10_000, max_queue_seconds=1.0, throughput=Throughput(prior=100.0))
        alone = batcher.submit(["x" * 300])  # 3 s of work, but nothing else is queued: admitted
        with pytest.raises(QueueFull) as info:
            batcher.submit(["y" * 300])  # it would wait for the first one's 300 tokens: 3 s, twice
        small = batcher.submit(["z" * 40])  # delayed by 40 tokens of each: 0.4 s, twice, within the budget
        alone.cancel()
        small.cancel()
        return info.value

    refusal = run(main())
    assert refusal.reason == "overloaded" and refusal.retry_after == 5  # ceil(2 x 3 s - 1 s)


def test_the_wait_factor_is_measured_within_its_range():
    """Admission multiplies the predicted wait by how much longer requests really waited lately: about once
    behind closed-loop clients, more under a flood; from twice until anything is measured."""
    late = Lateness()
    assert late.factor == 2.0
    for _ in range(40):
        late.observe(predicted=1.0, observed=1.05)
    assert 1.0 <= late.factor < 1.1
    for _ in range(40):
        late.observe(predicted=1.0, observed=30.0)  # counted as 4 at most: one stall does not shut the door
    assert 3.9 < late.factor <= 4.0


def test_queue_delay_is_processor_sharing():
    assert queue_delay(10, [], 10.0) == 0.0  # nothing before it: no delay, whatever its own size
    assert queue_delay(10, [5, 100], 10.0) == (5 + 10) / 10.0


def test_a_request_that_would_make_an_admitted_one_late_is_refused():
    """Under processor sharing a later request slows those before it: admission keeps their deadlines."""

    async def main():
        batcher = make(Recorder(), queue_size=10_000, max_queue_seconds=1.0, throughput=Throughput(prior=100.0))
        batcher.lateness = Lateness(prior=1.0)  # the predicted wait as it is
        first = batcher.submit(["x" * 300])  # alone: admitted; due after its 3 s + the 1 s budget
        medium = batcher.submit(["m" * 90])  # waits 0.9 s; the first now finishes after 3.9 s
        with pytest.raises(QueueFull) as info:
            batcher.submit(["s" * 20])  # would wait 0.4 s itself, but the first would finish after 4.1 s
        tiny = batcher.submit(["t" * 5])  # 0.05 s more for each: both still on time
        for future in (first, medium, tiny):
            future.cancel()
        return info.value

    refusal = run(main())
    assert refusal.reason == "overloaded" and "admitted before it" in str(refusal)


def test_deadlines_under_processor_sharing():
    # (tokens left, seconds to its deadline) at 10 tokens/s; a request with r left finishes after
    # min(r_i, r) of each queued request's work
    assert not pushes_past_deadline(50, [], 10.0)
    assert not pushes_past_deadline(10, [(20, 3.1)], 10.0)  # 2 s + 1 s: 3 s, on time
    assert pushes_past_deadline(20, [(20, 3.1)], 10.0)  # 2 s + 2 s: late
    assert pushes_past_deadline(1, [(20, 1.5)], 10.0)  # already late: anything beside it makes it later
    # beside a 5-token request, the 20-token one finishes after 2.5 s; a new 10-token one adds 1 s
    assert pushes_past_deadline(10, [(20, 3.2), (5, 9.0)], 10.0)
    assert not pushes_past_deadline(10, [(20, 3.6), (5, 9.0)], 10.0)


def test_requests_with_different_prompts_never_share_a_micro_batch():
    class Prompted(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.prompts: list[str] = []

        def __call__(self, texts, prompt=""):
            self.prompts.append(prompt)
            return super().__call__([prompt + t for t in texts])

    async def main():
        rec = Prompted()
        batcher = make(rec)
        futures = [batcher.submit(["a"], "q: "), batcher.submit(["b"]), batcher.submit(["c"], "q: ")]
        batcher.start()
        results = await asyncio.gather(*futures)
        await batcher.close()
        return rec, results

    rec, (a, b, c) = run(main())
    assert rec.calls == [["q: a", "q: c"], ["b"]] and rec.prompts == ["q: ", ""]
    np.testing.assert_allclose(a.embeddings, [vector("q: a")])
    np.testing.assert_allclose(b.embeddings, [vector("b")])
    np.testing.assert_allclose(c.embeddings, [vector("q: c")])
