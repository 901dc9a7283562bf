"""Quantization modes: bitsandbytes 8/4-bit at load time, torch.ao dynamic int8 after load."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from generation.specs import Quantization


def bnb_config(mode: Quantization, compute_dtype: torch.dtype) -> Any:
    """The BitsAndBytesConfig for a bitsandbytes mode (passed to from_pretrained)."""
    from transformers import BitsAndBytesConfig

    if mode is Quantization.BNB_8BIT:
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode is Quantization.BNB_4BIT:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    raise ValueError(f"{mode} is not a bitsandbytes mode")


def _conv1d_to_linear(model: nn.Module) -> None:
    """GPT-2 style models use transformers' Conv1D (a transposed Linear) which
    quantize_dynamic does not know; swap each for an equivalent nn.Linear first."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = nn.Linear(in_features, out_features, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(parent, name, linear)


def apply_int8_dynamic(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of Linear (and recurrent) layers, for CPU inference."""
    from torch.ao.quantization import quantize_dynamic

    _conv1d_to_linear(model)
    # torch.ao marks itself deprecated in favour of torchao; it is still the CPU path that
    # needs no extra build, so silence the notice rather than every log line of the worker.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(
            model, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8, inplace=True
        )
