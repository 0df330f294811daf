"""Tiny randomly initialised models of each supported backbone, saved as sentence-transformers folders.

Built offline from configs: BERT-vocab tokenizers come from the default model's files, byte-level
BPE (RoBERTa, BART) and unigram (ALBERT) tokenizers are trained or assembled here in milliseconds.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

# The STS benchmark, carried in the repository (data/stsb, with its licence notes).
STSB = Path(__file__).resolve().parents[1] / "data" / "stsb"
STS_TRAIN = STSB / "sts-train.csv"
BACKBONES = ("bert", "mpnet", "distilbert", "roberta", "albert", "bart")
# Texts that parity tests compare backends on: empty, one word, truncated, non-ASCII, two sentences.
PARITY_TEXTS = [
    "A man is playing a guitar.",
    "",
    "Short",
    "The quick brown fox jumps over the lazy dog near the river bank. " * 12,  # truncated at 64 tokens
    "Ünïcödé, emoji 🙂 and punctuation!?",
    "Two sentences. The second one is a little longer than the first one.",
]

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    with STS_TRAIN.open(encoding="utf-8") as handle:
        return tuple(line.split("\t")[5] for line in handle)[:3000]


def _tokenizer(model_type: str):
    from transformers import AlbertTokenizer, DistilBertTokenizer, MPNetTokenizer, RobertaTokenizer

    from sentemb.models.resolve import bundled_default

    if model_type in ("bert", "distilbert", "mpnet"):
        cls = {"bert": None, "distilbert": DistilBertTokenizer, "mpnet": MPNetTokenizer}[model_type]
        from transformers import AutoTokenizer

        return (cls or AutoTokenizer).from_pretrained(bundled_default())
    if model_type in ("roberta", "bart"):
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        bpe.train_from_iterator(
            _corpus(), vocab_size=600, min_frequency=2, special_tokens=specials, show_progress=False
        )
        data = json.loads(bpe.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["merges"]]
        return RobertaTokenizer(vocab=data["vocab"], merges=merges)
    if model_type == "albert":
        words = Counter(w.lower() for s in _corpus() for w in s.split())
        pieces = [("<pad>", 0.0), ("<unk>", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0), ("▁", -2.0)]
        pieces += [(f"▁{w}", -1.0 - i / 1000) for i, (w, _) in enumerate(words.most_common(400))]
        pieces += [(c, -8.0) for c in sorted({c for s in _corpus() for c in s.lower()} - {" "})]
        return AlbertTokenizer(vocab=pieces)
    raise ValueError(model_type)


def _config(model_type: str, vocab_size: int, pad_id: int):
    from transformers import AutoConfig

    if model_type == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": 128}
    elif model_type == "bart":
        sizes = {
            "d_model": 32, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "max_position_embeddings": 128, "bos_token_id": 0, "eos_token_id": 2,
        }  # fmt: skip
    elif model_type == "albert":
        sizes = {**SMALL, "embedding_size": 16, "max_position_embeddings": 128}
    else:
        sizes = {**SMALL, "max_position_embeddings": 130 if model_type in ("roberta", "mpnet") else 128}
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=pad_id, **sizes)


def build_tiny_model(
    model_type: str,
    folder: Path,
    *,
    pooling: str = "mean",
    normalize: bool = False,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``model_type`` model as a sentence-transformers folder and return it."""
    import torch
    from transformers import AutoModel

    tokenizer = _tokenizer(model_type)
    torch.manual_seed(seed)
    model = AutoModel.from_config(_config(model_type, len(tokenizer), tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (folder / "1_Pooling").mkdir()
    keys = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens", "mean_sqrt_len": "mean_sqrt_len_tokens"}
    pool = {f"pooling_mode_{v}": k == pooling for k, v in keys.items()}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pool}))
    return folder


def sentence_transformer(folder: Path):
    """sentence-transformers' model for ``folder``; for BART its encoder only, as sentemb runs it
    (sentence-transformers 6 would otherwise run BART's decoder)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    if getattr(st[0].model.config, "is_encoder_decoder", False):
        st[0].model = st[0].model.get_encoder()
    return st


# The cross-encoder families of the parity tests (bge-reranker is XLM-RoBERTa; ms-marco MiniLM is BERT).
CROSS_ENCODERS = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")
ACTIVATION_PATHS = {
    "sigmoid": "torch.nn.modules.activation.Sigmoid",
    "identity": "torch.nn.modules.linear.Identity",
    "tanh": "torch.nn.modules.activation.Tanh",
}


def build_tiny_cross_encoder(
    model_type: str,
    folder: Path,
    *,
    labels: int = 1,
    activation: str | None = None,
    layout: str = "st",
    max_length: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random cross-encoder and return its folder.

    ``layout``: "st" as sentence-transformers 6 saves a ``CrossEncoder`` (its activation in
    config_sentence_transformers.json), "st4" as sentence-transformers 4 did (config.json's
    ``sentence_transformers.activation_fn``), "hf" a plain ``*ForSequenceClassification`` folder.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    vocab = {"xlm-roberta": "roberta", "electra": "bert"}.get(model_type, model_type)
    tokenizer = _tokenizer(vocab)
    tokenizer.model_max_length = max_length
    torch.manual_seed(seed)
    if model_type == "electra":
        config = _config("bert", len(tokenizer), tokenizer.pad_token_id).to_dict()
        from transformers import ElectraConfig

        config = ElectraConfig(**{k: v for k, v in config.items() if k != "model_type"}, embedding_size=16)
    else:
        base = "roberta" if model_type == "xlm-roberta" else model_type
        config = _config(base, len(tokenizer), tokenizer.pad_token_id)
        if model_type == "xlm-roberta":
            from transformers import XLMRobertaConfig

            config = XLMRobertaConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    config.num_labels = labels
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if layout == "st4" and activation is not None:
        values = json.loads((folder / "config.json").read_text())
        values["sentence_transformers"] = {"activation_fn": ACTIVATION_PATHS[activation]}
        (folder / "config.json").write_text(json.dumps(values))
    if layout == "st":
        from sentence_transformers import CrossEncoder

        fn = None if activation is None else {"sigmoid": torch.nn.Sigmoid, "identity": torch.nn.Identity,
                                              "tanh": torch.nn.Tanh}[activation]()  # fmt: skip
        CrossEncoder(str(folder), device="cpu", activation_fn=fn).save_pretrained(str(folder))
    return folder


def build_tiny_splade(
    model_type: str,
    folder: Path,
    *,
    pooling: str = "max",
    activation: str = "relu",
    max_seq_length: int = 64,
    prompts: dict[str, str] | None = None,
    max_active_dims: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random SPLADE model (an MLM transformer and SpladePooling) as sentence-transformers 6
    saves a ``SparseEncoder``, and return its folder."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    mlm = _tiny_mlm(model_type, folder.with_name(folder.name + "-mlm"), seed)
    transformer = Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=max_seq_length)
    model = SparseEncoder(modules=[transformer, SpladePooling(pooling, activation)], prompts=prompts,
                          max_active_dims=max_active_dims, device="cpu")  # fmt: skip
    model.save_pretrained(str(folder))
    return folder


def build_tiny_inference_free(folder: Path, *, max_seq_length: int = 64, seed: int = 0) -> Path:
    """Write a tiny inference-free SPLADE model: a Router whose query route is a SparseStaticEmbedding (a
    random weight per token id) and whose document route is a BERT MLM with SpladePooling."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

    mlm = _tiny_mlm("bert", folder.with_name(folder.name + "-mlm"), seed)
    document = [Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=max_seq_length), SpladePooling()]
    tokenizer = _tokenizer("bert")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.rand(len(tokenizer), generator=generator) * (torch.rand(len(tokenizer), generator=generator) > 0.3)
    query = SparseStaticEmbedding(tokenizer=tokenizer, weight=weight, frozen=True)
    router = Router.for_query_document(query_modules=[query], document_modules=document)
    SparseEncoder(modules=[router], similarity_fn_name="dot", device="cpu").save_pretrained(str(folder))
    return folder


def _tiny_mlm(model_type: str, folder: Path, seed: int) -> Path:
    """A tiny random ``*ForMaskedLM`` with the default model's BERT vocabulary, saved by transformers."""
    import torch
    from transformers import AutoModelForMaskedLM

    tokenizer = _tokenizer(model_type)
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(_config(model_type, len(tokenizer), tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
