"""sentemb.export.packed: the packed BERT graph equals the model, and refuses to export when it does not."""

from __future__ import annotations

import pytest
import torch

import sentemb
from sentemb.config import Precision
from sentemb.export import packed, recipe_for, torch_onnx
from sentemb.models import read_model_folder


def _model(tiny_dirs, model_type):
    spec = read_model_folder(tiny_dirs[model_type])
    model = torch_onnx.load_model(spec, trust_remote_code=False)
    return spec, model, torch_onnx.input_names(model, uses_type_ids=model_type == "bert")


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_packed_equals_the_model_on_padded_rows(tiny_dirs, model_type):
    _, model, names = _model(tiny_dirs, model_type)
    module = packed.packed_bert(model, names)
    inputs = packed.parity_inputs(int(model.config.vocab_size), names)
    mask = inputs[1]
    with torch.no_grad():
        expected = model(**dict(zip(names, inputs, strict=True))).last_hidden_state * mask[:, :, None]
        got = module(*inputs)
    assert mask.sum(dim=1).tolist() == [11, 6, 1]  # rows of different lengths, padded
    assert float((got - expected).abs().max()) <= 1e-5


def test_linear_layers_see_the_real_tokens_as_one_3d_row(tiny_dirs):
    """(1, N, H), not (N, H): on a 2-D matrix OpenVINO's int8 quantisation of each LayerNorm's output
    runs about ten times slower (9-11% of int8's time in its per-layer counters)."""
    _, model, names = _model(tiny_dirs, "bert")
    module = packed.packed_bert(model, names)
    shapes = []
    for layer in model.encoder.layer:
        for linear in (layer.attention.self.query, layer.intermediate.dense, layer.output.dense):
            linear.register_forward_hook(lambda _, args, __: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        module(*packed.parity_inputs(int(model.config.vocab_size), names))
    width = model.config.hidden_size
    assert shapes and all(s[:2] == (1, 11 + 6 + 1) and s[2] in (width, model.config.intermediate_size) for s in shapes)


class _Renamed(torch.nn.Module):
    """What a transformers release that renamed BertSelfAttention's children would look like."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.renamed = inner

    def forward(self, *args, **kwargs):
        return self.renamed(*args, **kwargs)


def rename_attention(model):
    for layer in model.base_model.encoder.layer:
        layer.attention.self = _Renamed(layer.attention.self)
    return model


def _change_output(model):
    """A release whose BertOutput computes something the packed graph does not know about."""
    for layer in model.encoder.layer:
        original = layer.output.forward
        layer.output.forward = lambda hidden, residual, original=original: original(hidden, residual) * 1.5
    return model


def test_a_renamed_attribute_is_refused(tiny_dirs):
    _, model, names = _model(tiny_dirs, "bert")
    model = rename_attention(model)
    with torch.no_grad():  # the model itself still runs
        model(input_ids=torch.ones((1, 4), dtype=torch.int64))
    with pytest.raises(sentemb.BackendError, match=r"no longer has .*query.*backend='onnx'"):
        packed.packed_bert(model, names)


def test_a_changed_computation_is_refused(tiny_dirs):
    _, model, names = _model(tiny_dirs, "bert")
    with pytest.raises(sentemb.BackendError, match=r"differs from the model's own by .* \(> 0.0001\)"):
        packed.packed_bert(_change_output(model), names)


@pytest.mark.parametrize("change", [rename_attention, _change_output])
def test_the_export_is_refused_and_nothing_is_cached(tiny_dirs, tmp_path, monkeypatch, change):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SENTEMB_CACHE", str(tmp_path))
    real = torch_onnx.load_model
    monkeypatch.setattr(torch_onnx, "load_model", lambda *args: change(real(*args)))
    spec = read_model_folder(tiny_dirs["bert"])
    assert recipe_for(spec, Precision.FP32, "openvino").graph == "packed"
    with pytest.raises(sentemb.BackendError, match="packed graph"):
        sentemb.load(tiny_dirs["bert"], backend="openvino", device="cpu")
    assert [p.name for p in (tmp_path / "openvino").iterdir() if not p.name.endswith(".lock")] == []


def test_a_packed_export_lets_its_batches_pad_more(onnx_cache, tiny_dirs):
    """Padding costs a packed graph only attention: its backend batches up to PACKED_MAX_PADDING (not at
    int8, whose vectors move with the padding)."""
    pytest.importorskip("openvino")
    from sentemb.batching import MAX_PADDING, PACKED_MAX_PADDING
    from sentemb.export import ensure_export
    from sentemb.export.manifest import check_export

    spec = read_model_folder(tiny_dirs["bert"])
    cases = [("openvino", "fp32", "packed", PACKED_MAX_PADDING), ("openvino", "int8", "packed", MAX_PADDING),
             ("onnx", "fp32", "padded", MAX_PADDING)]  # fmt: skip
    for runtime, precision, graph, padding in cases:
        assert check_export(ensure_export(spec, Precision(precision), runtime=runtime).folder).graph == graph
        encoder = sentemb.load(tiny_dirs["bert"], backend=runtime, precision=precision, device="cpu")
        assert encoder._backend.max_padding == padding
