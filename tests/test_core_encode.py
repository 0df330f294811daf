"""encode(): input checking, long text, batch independence, order, threads, devices, progress."""

import threading

import numpy as np
import pytest

import sentemb
from conftest import STS_SENTENCES

LONG = "The committee met on Tuesday to discuss the budget for the coming year and agreed on new rules. "


def test_empty_input_and_single_string_shapes(default_encoder):
    empty = default_encoder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    one = default_encoder.encode("a single sentence")
    assert one.shape == (1, 384)
    np.testing.assert_array_equal(one, default_encoder.encode(["a single sentence"]))
    assert default_encoder.encode(iter(["a", "b"])).shape == (2, 384)


@pytest.mark.parametrize(
    ("texts", "index"),
    [(["ok", None], 1), ([3.5], 0), (["a", "b", b"bytes"], 2), (["a", ["nested"]], 1)],
)
def test_non_text_items_raise_type_error_naming_the_index(default_encoder, texts, index):
    with pytest.raises(TypeError, match=rf"texts\[{index}\]") as info:
        default_encoder.encode(texts)
    assert isinstance(info.value, sentemb.InvalidInputError) and info.value.index == index


@pytest.mark.parametrize("bad", [b"bytes", 42, None])
def test_non_iterable_or_bytes_input_raises_type_error(default_encoder, bad):
    with pytest.raises(TypeError, match="expected a str or a list of str"):
        default_encoder.encode(bad)


@pytest.mark.parametrize("text, position", [("\ud800", 0), ("ok \udfff then", 3), ("emoji \U0001f600 \ud83d", 8)])
def test_text_that_is_not_valid_unicode_is_refused_naming_index_and_position(default_encoder, text, position):
    with pytest.raises(sentemb.InvalidTextError, match=rf"texts\[1\].*character {position}") as info:
        default_encoder.encode(["fine", text])
    assert isinstance(info.value, ValueError) and isinstance(info.value, sentemb.SentembError)
    assert (info.value.index, info.value.position) == (1, position)
    assert "replace" in str(info.value)  # says what to do


def test_control_characters_and_nul_only_texts_embed_without_tokenizer_errors(default_encoder):
    vectors = default_encoder.encode(["\x00", "\x00\x00 text", "\ufeff", "\x1b[31m"])
    assert vectors.shape == (4, default_encoder.dim) and np.isfinite(vectors).all()


def test_empty_and_whitespace_texts_give_the_same_finite_vector(default_encoder):
    vectors = default_encoder.encode(["", "   ", "\n\t"])
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert abs(np.linalg.norm(vectors[0]) - 1) < 1e-5


def test_huge_text_without_spaces_is_capped_and_reported(default_encoder):
    result = default_encoder.encode_with_info(["x" * 1_000_000, "short one"])
    assert result.embeddings.shape == (2, 384) and np.isfinite(result.embeddings).all()
    huge, short = result.info
    assert huge.truncated and huge.chars_capped
    assert not short.truncated and short.num_tokens == 2
    assert result.truncated_indices == [0]


def test_vector_does_not_depend_on_batch_neighbours(default_encoder):
    neighbour = LONG * 12  # ~250+ tokens
    alone = default_encoder.encode(STS_SENTENCES)
    together = default_encoder.encode([neighbour, *STS_SENTENCES, neighbour])[1:-1]
    assert np.abs(alone - together).max() <= 1e-5


def test_input_order_is_restored(default_encoder):
    texts = [LONG * n for n in (1, 5, 2)] + STS_SENTENCES
    vectors = default_encoder.encode(texts)
    permutation = [4, 0, 5, 2, 1, 3]
    np.testing.assert_allclose(default_encoder.encode([texts[i] for i in permutation]), vectors[permutation], atol=1e-5)


def test_truncation_is_reported_and_error_mode_raises(default_encoder):
    long_text = LONG * 20
    result = default_encoder.encode_with_info(["short", long_text])
    assert not result.info[0].truncated
    assert result.info[1].truncated and result.info[1].num_tokens > 254
    strict = sentemb.load(long_text="error")
    assert strict.encode(["short enough"]).shape == (1, 384)
    with pytest.raises(
        sentemb.TextTooLongError, match=r"text 1 has \d+ tokens.*long_text='truncate' or 'chunk'"
    ) as info:
        strict.encode(["fine", long_text])
    assert info.value.index == 1


def test_chunk_mode_equals_plain_vector_when_the_text_fits(default_encoder):
    chunked = sentemb.load(long_text="chunk")
    texts = [*STS_SENTENCES, LONG * 2]
    np.testing.assert_allclose(chunked.encode(texts), default_encoder.encode(texts), atol=1e-6)


def test_chunk_mode_represents_the_whole_long_text(default_encoder):
    head = LONG * 14  # fills the 256-token window on its own
    tail = "Meanwhile the football team celebrated a dramatic victory in the championship final. " * 6
    text = head + tail
    chunked = sentemb.load(long_text="chunk", chunk_overlap=16)
    result = chunked.encode_with_info([text])
    assert result.info[0].chunks >= 2 and not result.info[0].truncated
    truncated = default_encoder.encode([text])[0]
    tail_vector = default_encoder.encode([tail])[0]
    whole = result.embeddings[0]
    assert abs(np.linalg.norm(whole) - 1) < 1e-5
    # truncation never sees the tail; the chunked vector does
    assert whole @ tail_vector > truncated @ tail_vector + 0.1


def test_eight_threads_share_one_encoder(default_encoder):
    groups = [[f"{s} ({g})" for s in STS_SENTENCES] + [LONG * (g + 1)] for g in range(8)]
    expected = [default_encoder.encode(texts) for texts in groups]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(g: int) -> None:
        try:
            for _ in range(3):
                results[g] = default_encoder.encode(groups[g])
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g,)) for g in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for g in range(8):
        assert np.abs(results[g] - expected[g]).max() <= 1e-5


def test_progress_bar_can_be_forced_and_is_off_by_default(default_encoder, capsys):
    default_encoder.encode(STS_SENTENCES * 100)
    assert "encoding" not in capsys.readouterr().err
    default_encoder.encode(STS_SENTENCES, show_progress=True)
    assert "encoding" in capsys.readouterr().err


def test_cuda_request_without_cuda_warns_and_runs_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        encoder = sentemb.load(device="cuda")
    assert encoder.device == "cpu"
    assert sentemb.load(device="auto").device == "cpu"


def test_bf16_on_cpu_stays_close_to_fp32(default_encoder):
    texts = [*STS_SENTENCES, LONG]
    bf16 = sentemb.load(precision="bf16", device="cpu").encode(texts)
    cosine = np.sum(bf16 * default_encoder.encode(texts), axis=1)
    assert cosine.min() > 0.999


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_cuda_half_precision_matches_fp32(default_encoder, precision):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    encoder = sentemb.load(device="cuda", precision=precision)
    assert encoder.device.startswith("cuda")
    cosine = np.sum(encoder.encode(STS_SENTENCES) * default_encoder.encode(STS_SENTENCES), axis=1)
    assert cosine.min() > 0.999


def test_load_takes_the_model_from_a_given_config_unless_one_is_named(tiny_dirs):
    config = sentemb.EncoderConfig(model=str(tiny_dirs["bert"]), device="cpu", batch_size=2)
    encoder = sentemb.load(config=config)
    assert encoder.config == config and encoder.resolved.path == tiny_dirs["bert"].resolve()
    assert encoder.batch_size == 2 and encoder.describe().batch_size == 2
    assert sentemb.load(config=config.replace(batch_size=None)).batch_size == 64  # the CPU's default
    other = sentemb.load(tiny_dirs["mpnet"], config=config)
    assert other.config.model == str(tiny_dirs["mpnet"]) and other.spec.model_type == "mpnet"
