"""Types that say what they carry: facts as a frozen dataclass, backend as an enum, load's typed options."""

import dataclasses
import json
import typing

import click
import pytest

import sentemb
from sentemb.cli.flags import add_flags
from sentemb.config import BackendName, EncoderConfig, LoadOptions
from sentemb.facts import EncoderFacts


def test_load_options_are_the_config_fields_with_the_same_types():
    fields = {f.name: str(f.type) for f in dataclasses.fields(EncoderConfig) if f.name != "model"}
    hints = LoadOptions.__annotations__
    assert set(hints) == set(fields)
    for name, annotation in fields.items():
        declared = str(hints[name].__forward_arg__ if isinstance(hints[name], typing.ForwardRef) else hints[name])
        assert set(annotation.split(" | ")) <= set(declared.split(" | ")), name


def test_dtype_is_refused_naming_precision():
    with pytest.raises(sentemb.ConfigError, match="precision="):
        sentemb.load(dtype="float16")  # type: ignore[call-arg]
    with pytest.raises(sentemb.ConfigError, match="unknown option"):
        sentemb.load(colour="blue")  # type: ignore[call-arg]


def test_backend_is_an_enum_that_compares_with_its_string():
    config = EncoderConfig(backend="ONNX")
    assert config.backend is BackendName.ONNX and config.backend == "onnx" and str(config.backend) == "onnx"
    assert json.dumps({"backend": config.backend}) == '{"backend": "onnx"}'
    with pytest.raises(sentemb.ConfigError, match="'torch', 'onnx', 'openvino', 'auto'"):
        EncoderConfig(backend="tensorrt")
    command = add_flags(EncoderConfig)(click.command()(lambda **_: None))
    flag = next(p for p in command.params if p.name == "backend")
    assert isinstance(flag.type, click.Choice)
    assert list(flag.type.choices) == [member.value for member in BackendName]


def test_describe_is_frozen_facts_with_a_json_dict(default_encoder):
    facts = default_encoder.describe()
    assert isinstance(facts, EncoderFacts)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.dim = 1  # type: ignore[misc]
    as_dict = json.loads(json.dumps(facts.to_dict()))
    assert set(as_dict) == {f.name for f in dataclasses.fields(EncoderFacts)}
    assert (as_dict["dim"], as_dict["normalize"], as_dict["dense"]) == (facts.dim, facts.normalize, list(facts.dense))
    assert facts.normalize is default_encoder.normalizes is True
    assert facts.backend == default_encoder.backend == "torch"


def test_max_chars_cuts_before_tokenising_and_reports_it(tiny_dirs):
    folder = str(tiny_dirs["bert"])
    capped = sentemb.load(folder, device="cpu", max_chars=12)
    plain = sentemb.load(folder, device="cpu")
    long = "a fairly long sentence about cars"
    result = capped.encode_with_info(["short", long])
    assert [(i.truncated, i.chars_capped) for i in result.info] == [(False, False), (True, True)]
    assert result.embeddings[1] == pytest.approx(plain.encode([long[:12]])[0], abs=1e-6)
    assert capped.describe().max_chars == 12 and plain.describe().max_chars is None
    chunked = sentemb.load(folder, device="cpu", max_chars=12, long_text="chunk").encode_with_info([long])
    assert chunked.info[0].truncated  # text was lost at the cap, even though chunking keeps all tokens
    assert plain.with_max_chars(12).encode([long]) == pytest.approx(result.embeddings[1:], abs=1e-6)


def test_max_chars_with_long_text_error_refuses_naming_the_cap(tiny_dirs):
    strict = sentemb.load(str(tiny_dirs["bert"]), device="cpu", max_chars=5, long_text="error")
    with pytest.raises(sentemb.TextTooLongError, match="max_chars=5") as caught:
        strict.encode(["fine", "too long here"])
    assert caught.value.index == 1 and caught.value.num_tokens > 0
    with pytest.raises(sentemb.ConfigError, match="max_chars"):
        EncoderConfig(max_chars=0)


def test_the_served_encoder_gets_the_server_cap_unless_it_has_its_own(tiny_dirs):
    pytest.importorskip("fastapi")
    from sentemb.server.service import EmbeddingService
    from sentemb.server.settings import ServerSettings

    folder = str(tiny_dirs["bert"])
    settings = ServerSettings(port=0, max_chars=100)
    assert EmbeddingService(sentemb.load(folder, device="cpu"), settings).encoder.config.max_chars == 100
    own = sentemb.load(folder, device="cpu", max_chars=7)
    assert EmbeddingService(own, settings).encoder.config.max_chars == 7
