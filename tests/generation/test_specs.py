"""SamplingParams: validation and the JSON round trip used by queue payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from generation.specs import MAX_NEW_TOKENS_LIMIT, MAX_STOP_SEQUENCES, SamplingParams


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -0.01, "temperature"),
        ("temperature", 2.01, "temperature"),
        ("temperature", float("nan"), "temperature"),
        ("top_p", 0.0, "top_p"),
        ("top_p", -0.5, "top_p"),
        ("top_p", 1.01, "top_p"),
        ("max_new_tokens", 0, "max_new_tokens"),
        ("max_new_tokens", -1, "max_new_tokens"),
        ("max_new_tokens", MAX_NEW_TOKENS_LIMIT + 1, "max_new_tokens"),
        ("stop", ("a",) * (MAX_STOP_SEQUENCES + 1), "stop sequences"),
        ("stop", ("ok", ""), "stop sequences"),
    ],
)
def test_sampling_params_rejects_out_of_range_values(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})


@pytest.mark.parametrize(
    "values",
    [
        {"temperature": 0.0},
        {"temperature": 2.0},
        {"top_p": 1.0},
        {"top_p": 1e-6},
        {"max_new_tokens": 1},
        {"max_new_tokens": MAX_NEW_TOKENS_LIMIT},
        {"stop": ("x",) * MAX_STOP_SEQUENCES},
    ],
)
def test_sampling_params_accepts_boundary_values(values: dict[str, Any]) -> None:
    params = SamplingParams(**values)
    for key, value in values.items():
        assert getattr(params, key) == value


def test_sampling_params_defaults_are_valid_and_sampled() -> None:
    params = SamplingParams()
    assert params.temperature > 0
    assert params.stop == ()
    assert params.seed is None


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(),
        SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=1),
        SamplingParams(
            temperature=1.3, top_p=0.5, max_new_tokens=77, stop=("\n\n", "###"), seed=42
        ),
        SamplingParams(stop=("<|im_end|>", "é東京😀"), seed=0),
    ],
)
def test_sampling_params_round_trip_through_dict_and_json(params: SamplingParams) -> None:
    data = params.to_dict()
    assert isinstance(data["stop"], list)
    assert SamplingParams.from_dict(data) == params
    through_json = json.loads(json.dumps(data))
    restored = SamplingParams.from_dict(through_json)
    assert restored == params
    assert isinstance(restored.stop, tuple)


def test_sampling_params_from_dict_fills_missing_keys_with_defaults() -> None:
    assert SamplingParams.from_dict({"temperature": 0.0}) == SamplingParams(temperature=0.0)


def test_sampling_params_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(TypeError, match="top_k"):
        SamplingParams.from_dict({"temperature": 0.5, "top_k": 40})


def test_sampling_params_from_dict_validates_values() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams.from_dict({"temperature": 5})


def test_sampling_params_are_frozen() -> None:
    params = SamplingParams()
    with pytest.raises(AttributeError):
        params.temperature = 1.0  # type: ignore[misc]
