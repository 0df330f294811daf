import subprocess
import sys

import sentemb

EXPECTED = {
    "DEFAULT_MODEL", "BackendError", "BackendName", "ConfigError", "EncodeResult", "Encoder", "EncoderConfig",
    "EncoderFacts", "Hit", "Index", "IntegrityError", "InvalidInputError", "InvalidTextError", "LongText",
    "ModelNotFoundError", "Pooling", "Precision", "RankHit", "Reranker", "SentembError", "StsResult", "TextInfo",
    "TextTooLongError", "UnsafeModelError", "UnsupportedModelError", "IndexFileError", "ModelMismatchError",
    "VectorsError", "__version__", "cos_sim", "distill", "dot_score", "evaluate_sts", "load", "load_reranker",
    "quantize", "read_sts", "semantic_search", "SparseEmbeddings", "SparseEncodeResult", "SparseEncoder", "load_sparse",
}  # fmt: skip


def test_all_is_sorted_complete_and_resolves():
    assert sentemb.__all__ == sorted(sentemb.__all__, key=lambda n: (not n.isupper(), n))
    assert set(sentemb.__all__) == EXPECTED
    for name in sentemb.__all__:
        assert getattr(sentemb, name) is not None


def test_retrieval_errors_are_in_the_one_tree():
    for name in ("VectorsError", "IndexFileError", "ModelMismatchError"):
        error = getattr(sentemb, name)
        assert error is getattr(sentemb.errors, name)
        assert issubclass(error, sentemb.SentembError) and issubclass(error, ValueError)
        assert name in (sentemb.errors.__doc__ or "")


def test_import_is_light():
    heavy = "{'torch', 'transformers', 'tokenizers', 'onnxruntime'}"
    code = f"import sys, sentemb; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_is_frozen_and_validated():
    import dataclasses

    import pytest

    config = sentemb.EncoderConfig(pooling="cls", precision="bfloat16", long_text="chunk")
    assert config.pooling is sentemb.Pooling.CLS and config.precision is sentemb.Precision.BF16
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 3  # type: ignore[misc]
    with pytest.raises(sentemb.ConfigError):
        sentemb.EncoderConfig(batch_size=0)
    with pytest.raises(TypeError):
        sentemb.EncoderConfig("positional")  # type: ignore[misc]
