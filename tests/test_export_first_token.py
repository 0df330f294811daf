"""sentemb.export.first_token: a cross-encoder's last layer on the first token only gives the model's
logits, does the layer's work on one row, and is refused (the model left whole) when it would not."""

from __future__ import annotations

import pytest
import torch

import sentemb
from sentemb.config import Precision
from sentemb.export import first_token, recipe_for, torch_onnx
from sentemb.export.packed import parity_inputs
from sentemb.models import read_model_folder
from test_export_packed import rename_attention
from tiny_models import CROSS_ENCODERS, build_tiny_cross_encoder

COVERED = [family for family in CROSS_ENCODERS if family in first_token.FIRST_TOKEN_TYPES]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-token")
    built = {family: build_tiny_cross_encoder(family, root / family) for family in CROSS_ENCODERS}
    built["nli"] = build_tiny_cross_encoder("bert", root / "nli", labels=3, seed=1)
    return built


def _model(folders, name):
    spec = read_model_folder(folders[name])
    model = torch_onnx.load_model(spec, trust_remote_code=False)
    return spec, model, torch_onnx.input_names(model, uses_type_ids=True)


def _logits(model, names, inputs):
    with torch.no_grad():
        return model(**dict(zip(names, inputs, strict=True))).logits


@pytest.mark.parametrize("name", [*COVERED, "nli"])
def test_the_logits_are_the_models_on_padded_rows(folders, name):
    spec, model, names = _model(folders, name)
    assert first_token.covers(spec)
    inputs = parity_inputs(int(model.config.vocab_size), names)
    expected = _logits(model, names, inputs)
    module = first_token.first_token_classifier(model, names)
    with torch.no_grad():
        got = module(*inputs)
    assert inputs[1].sum(dim=1).tolist() == [11, 6, 1]  # rows of different lengths, padded
    assert got.shape == expected.shape == (3, model.config.num_labels)
    assert float((got - expected).abs().max()) <= 1e-5


def test_the_last_layer_projects_every_token_but_computes_one_row(folders):
    _, model, names = _model(folders, "bert")
    module = first_token.first_token_classifier(model, names)
    last = module.layer[-1]
    seen = {}
    for name in ("attention.self.query", "attention.self.key", "intermediate.dense", "output.dense"):
        hook = lambda _, args, __, name=name: seen.update({name: args[0].shape})  # noqa: E731
        last.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        module(*parity_inputs(int(model.config.vocab_size), names))
    assert seen["attention.self.key"][:2] == (3, 11)  # keys (and values) of every token
    assert [seen[n][:2] for n in ("attention.self.query", "intermediate.dense", "output.dense")] == [(3, 1)] * 3
    assert len(model.base_model.encoder.layer) == model.config.num_hidden_layers - 1  # the model stops short


def test_only_cross_encoders_of_the_bert_layout_get_the_graph(folders, tiny_dirs):
    for name in COVERED:
        for runtime in ("onnx", "openvino"):
            assert recipe_for(read_model_folder(folders[name]), Precision.FP32, runtime).graph == "first-token"
    assert recipe_for(read_model_folder(folders["distilbert"]), Precision.FP32).graph == "padded"
    assert recipe_for(read_model_folder(tiny_dirs["bert"]), Precision.FP32, "openvino").graph == "packed"


def _change_attention(model):
    """A release whose self-attention computes something the first-token graph does not know about."""
    for layer in model.base_model.encoder.layer:
        original = layer.attention.self.forward

        def changed(*args, original=original, **kwargs):
            context, *rest = original(*args, **kwargs)
            return (context * 100, *rest)

        layer.attention.self.forward = changed
    return model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (rename_attention, r"no longer has .*query"),
        (_change_attention, r"differ from the model's own by .* \(> 0.0001\)"),
    ],
)
def test_a_changed_release_is_refused_and_the_model_left_whole(folders, change, message):
    _, model, names = _model(folders, "bert")
    model = change(model)
    inputs = parity_inputs(int(model.config.vocab_size), names)
    before = _logits(model, names, inputs)
    with pytest.raises(sentemb.BackendError, match=rf"{message}.*backend='torch'"):
        first_token.first_token_classifier(model, names)
    assert len(model.base_model.encoder.layer) == model.config.num_hidden_layers
    assert torch.equal(_logits(model, names, inputs), before)


def test_the_export_is_refused_and_the_torch_backend_runs_the_whole_model(folders, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("SENTEMB_CACHE", str(tmp_path))
    real = torch_onnx.load_model
    monkeypatch.setattr(torch_onnx, "load_model", lambda *args: _change_attention(real(*args)))
    with pytest.raises(sentemb.BackendError, match="first-token graph"):
        sentemb.load_reranker(str(folders["bert"]), backend="onnx", device="cpu")
    assert [p.name for p in (tmp_path / "onnx").iterdir() if not p.name.endswith(".lock")] == []

    load = AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(
        AutoModelForSequenceClassification,
        "from_pretrained",
        lambda *args, **kwargs: _change_attention(load(*args, **kwargs)),
    )
    pairs = [("a query", "a passage about something else entirely"), ("another", "text")]
    scores = sentemb.load_reranker(str(folders["bert"]), backend="torch", device="cpu").predict(pairs)
    model = AutoModelForSequenceClassification.from_pretrained(folders["bert"]).eval()
    queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
    tokens = AutoTokenizer.from_pretrained(folders["bert"])(queries, passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(model(**tokens).logits[:, 0]).numpy()
    assert abs(scores - expected).max() <= 1e-5
