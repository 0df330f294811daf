import numpy as np
import pytest

from sentemb.batching import pad, plan_batches
from sentemb.config import Pooling
from sentemb.pooling import normalize, pool

# Two rows, three positions, two dims; row 1 has one real token and two padding positions.
EMB = np.array(
    [
        [[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]],
        [[-1.0, 7.0], [100.0, 100.0], [-100.0, 100.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Pooling.MEAN, [[3.0, -2.0 / 3.0], [-1.0, 7.0]]),
        (Pooling.CLS, [[1.0, 2.0], [-1.0, 7.0]]),
        (Pooling.MAX, [[5.0, 2.0], [-1.0, 7.0]]),
        (Pooling.MEAN_SQRT_LEN, [[9.0 / np.sqrt(3), -2.0 / np.sqrt(3)], [-1.0, 7.0]]),
        (Pooling.WEIGHTED_MEAN, [[22.0 / 6.0, -6.0 / 6.0], [-1.0, 7.0]]),  # weights 1, 2, 3
        (Pooling.LAST_TOKEN, [[5.0, 0.0], [-1.0, 7.0]]),
    ],
)
def test_pooling_matches_hand_computed_values_and_ignores_padding(mode, expected):
    emb_before, mask_before = EMB.copy(), MASK.copy()
    out = pool(EMB, MASK, mode)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.array(expected, dtype=np.float32), rtol=1e-6)
    # pure: inputs untouched
    np.testing.assert_array_equal(EMB, emb_before)
    np.testing.assert_array_equal(MASK, mask_before)


def test_padding_values_never_leak_into_any_mode():
    noisy = EMB.copy()
    noisy[1, 1:] = np.nan  # whatever sits under padding must not matter
    for mode in Pooling:
        out = pool(noisy, MASK, mode)
        assert np.isfinite(out).all(), mode


@pytest.mark.parametrize("mode", list(Pooling))
def test_torch_pooling_matches_numpy_pooling(mode):
    """The torch backend pools on the model's device with its own copy of pool(); same numbers."""
    torch = pytest.importorskip("torch")
    from sentemb.backends.torch_backend import pool_tensor

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 7, 4)).astype(np.float32)
    mask = np.array([[1] * 7, [1, 1, 0, 0, 0, 0, 0], [1] * 3 + [0] * 4, [1] + [0] * 6, [1] * 6 + [0]])
    emb[mask == 0] = np.nan  # padding must not leak in torch either
    out = pool_tensor(torch.from_numpy(emb), torch.from_numpy(mask), mode)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), pool(emb, mask, mode), rtol=1e-6, atol=1e-7)
    half = pool_tensor(torch.from_numpy(emb).to(torch.bfloat16), torch.from_numpy(mask), mode)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_one_token_row_pools_to_that_token():
    emb = np.array([[[0.5, -0.5]]], dtype=np.float32)
    for mode in Pooling:
        np.testing.assert_allclose(pool(emb, np.array([[1]]), mode), [[0.5, -0.5]])


def test_a_skipped_prompt_is_left_out_of_pooling_but_not_out_of_attention():
    ids = [np.array([101, 7, 8, 9, 102]), np.array([101, 7, 102])]
    batch = pad(ids, [np.zeros(5, np.int64), np.zeros(3, np.int64)], 0, False, skip=np.array([2, 3]))
    np.testing.assert_array_equal(batch.attention_mask, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(batch.pool_mask, [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    emb = np.arange(20, dtype=np.float32).reshape(2, 5, 2)
    np.testing.assert_array_equal(pool(emb, batch.pool_mask, Pooling.CLS)[0], emb[0, 2])  # first kept position
    np.testing.assert_array_equal(pool(emb, batch.pool_mask, Pooling.MEAN)[1], [0.0, 0.0])  # nothing kept
    np.testing.assert_array_equal(pool(emb, batch.pool_mask, Pooling.LAST_TOKEN)[1], [0.0, 0.0])
    plain = pad(ids, [np.zeros(5, np.int64), np.zeros(3, np.int64)], 0, False)
    assert plain.pool_mask is plain.attention_mask  # no prompt left out: no copy


def test_truncate_dim_cuts_and_optionally_renormalises():
    from sentemb.errors import ConfigError
    from sentemb.pooling import truncate_dim

    x = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    np.testing.assert_array_equal(truncate_dim(x, 2), [[3.0, 4.0]])
    np.testing.assert_allclose(truncate_dim(x, 2, renormalize=True), [[0.6, 0.8]])
    assert truncate_dim(x, None) is x
    for bad in (0, 4):
        with pytest.raises(ConfigError, match=f"truncate_dim={bad} is not between 1 and the model's width 3"):
            truncate_dim(x, bad)


def test_normalize_gives_unit_rows_and_keeps_zero_rows_finite():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = normalize(x)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert x[0, 0] == 3.0


def test_plan_batches_respects_count_and_max_tokens_and_covers_every_row_once():
    lengths = [5, 250, 12, 12, 3, 40, 7, 300, 9, 1]
    batches = plan_batches(lengths, batch_size=3, max_tokens=260)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * longest <= 260
    # longest first, and the over-budget 300-token row gets a batch of its own
    assert batches[0].tolist() == [7]
    firsts = [max(lengths[i] for i in b) for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_pad_right_pads_with_pad_id_and_masks():
    batch = pad([np.array([5, 6, 7]), np.array([8])], [np.zeros(3, int), np.ones(1, int)], pad_id=1, with_types=True)
    np.testing.assert_array_equal(batch.input_ids, [[5, 6, 7], [8, 1, 1]])
    np.testing.assert_array_equal(batch.attention_mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(batch.token_type_ids, [[0, 0, 0], [1, 0, 0]])
    assert pad([np.array([1])], [np.array([0])], 0, with_types=False).token_type_ids is None


def test_plan_batches_closes_a_batch_before_padding_passes_its_limit():
    from sentemb.batching import MAX_PADDING, MIN_ROWS, PACKED_MAX_PADDING

    rng = np.random.default_rng(0)
    lengths = rng.integers(6, 60, size=200).tolist()  # a micro-batch of mixed lengths
    counts = {}
    for limit in (MAX_PADDING, PACKED_MAX_PADDING):
        batches = plan_batches(lengths, batch_size=64, max_tokens=16384, max_padding=limit)
        assert sorted(np.concatenate(batches).tolist()) == list(range(200))
        for batch in batches:
            real = sum(lengths[i] for i in batch)
            padded = len(batch) * max(lengths[i] for i in batch)
            assert len(batch) <= MIN_ROWS or padded <= real * (1 + limit)
        counts[limit] = len(batches)
    batches = plan_batches(lengths, batch_size=64, max_tokens=16384)
    everything = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert everything <= sum(lengths) * 1.10  # batches of 64 by count alone pad 22% here
    assert counts[PACKED_MAX_PADDING] < counts[MAX_PADDING] == len(batches)  # a packed graph gets fuller batches
    # equal lengths (a large sorted corpus) still fill whole batches
    assert [len(b) for b in plan_batches([20] * 130, batch_size=64, max_tokens=16384)] == [64, 64, 2]


def test_a_call_finding_streams_idle_is_spread_over_them():
    from sentemb.batching import Inputs, run_batches, spread, stream_pool

    rows = np.arange(8)
    assert [b.tolist() for b in spread([rows], 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # length order kept
    assert [len(b) for b in spread([rows], 3)] == [2, 2, 4]
    assert [len(b) for b in spread([rows[:1]], 2)] == [1]  # one text: one batch
    assert [len(b) for b in spread([rows[:5], rows[5:]], 2)] == [5, 3]  # enough batches already

    sizes = []
    inputs = Inputs([np.array([1, 2, 3])] * 8, [np.zeros(3, np.int64)] * 8, 0, False)
    pool = stream_pool(2)
    assert pool is not None and stream_pool(1) is None
    out = run_batches(inputs, lambda b: sizes.append(len(b.input_ids)) or np.ones((len(b.input_ids), 2)), 2,
                      batch_size=64, max_tokens=4096, pool=pool)  # fmt: skip
    assert sorted(sizes) == [4, 4] and out.shape == (8, 2)


def test_the_stream_pool_counts_the_batches_in_flight():
    import threading

    from sentemb.batching import stream_pool

    pool = stream_pool(2)
    release, counted = threading.Event(), threading.Event()
    future = pool.submit(release.wait)
    future.add_done_callback(lambda _: counted.set())  # runs after the pool's own count
    assert pool.idle == 1
    release.set()
    assert counted.wait(10)
    assert pool.idle == 2
