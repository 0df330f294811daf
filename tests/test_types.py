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
