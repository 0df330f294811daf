"""torch -> ONNX: the transformer (BART: its encoder) with dynamic batch and sequence axes, padded as
transformers runs it, or packed (:mod:`sentemb.export.packed`) when the recipe says so; for a
cross-encoder, with its classification head (the graph's output is then the logits; the last layer
on the first token only where :mod:`sentemb.export.first_token` covers the model); for a sparse
encoder, with its MLM head and SPLADE's pooling (the output is then (B, vocab) weights)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentemb.scoped import no_progress_bars, quiet

if TYPE_CHECKING:
    from sentemb.export.recipe import Recipe
    from sentemb.models import ModelSpec


def load_model(spec: ModelSpec, trust_remote_code: bool) -> Any:
    """The transformer in eval mode (encoder-decoder models: the encoder; a cross-encoder: with its
    classification head), eager attention: it exports as plain MatMul/Softmax, the pattern ORT's
    attention fusion recognises."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    auto = {"rerank": AutoModelForSequenceClassification, "sparse": AutoModelForMaskedLM}.get(spec.task, AutoModel)
    with no_progress_bars():
        model = auto.from_pretrained(
            spec.transformer_dir,
            trust_remote_code=trust_remote_code,
            use_safetensors=not spec.pickle_weights,
            attn_implementation="eager",
        )
    if getattr(model.config, "is_encoder_decoder", False) and spec.task == "embedding":
        model = model.get_encoder()
    return model.eval()


def input_names(model: Any, uses_type_ids: bool) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if uses_type_ids and "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")
    return names


def graph_output(model: Any, names: list[str], output: str) -> Any:
    """A module taking the inputs positionally (in ``names``' order) and returning the model's
    ``output`` (last_hidden_state, or a classifier's logits)."""
    import torch

    class Output(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return getattr(self.inner(**dict(zip(names, args, strict=True)), return_dict=True), output)

    return Output().eval()


def export_torch(spec: ModelSpec, recipe: Recipe, path: Path, uses_type_ids: bool, trust_remote_code: bool) -> None:
    """torch.onnx.export of ``spec``'s transformer into ``path`` as ``recipe.graph`` says."""
    import torch

    from sentemb.export.first_token import first_token_classifier
    from sentemb.export.packed import packed_bert
    from sentemb.export.splade_graph import HEAD_PREFIX, splade_module

    model = load_model(spec, trust_remote_code)
    names = input_names(model, uses_type_ids)
    # The packed module takes the inputs in the same order and returns last_hidden_state itself.
    output = "logits" if recipe.head == "logits" else "last_hidden_state"
    if recipe.head.startswith(HEAD_PREFIX):
        output, module = "splade", splade_module(model, names, recipe.head)
    elif recipe.graph == "packed":
        module = packed_bert(model, names)
    elif recipe.graph == "first-token":
        module = first_token_classifier(model, names)
    else:
        module = graph_output(model, names, output)

    # A padded row, so that no "mask is all ones" shortcut is traced into the graph.
    ids = torch.full((2, 8), 5, dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    dummy = (ids, mask, torch.zeros_like(ids))[: len(names)]
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    with quiet("torch.onnx"), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=recipe.opset,
            do_constant_folding=True,
            dynamo=False,
        )
