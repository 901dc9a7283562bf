"""Quantization modes: bitsandbytes 8/4-bit at load time, torch.ao dynamic int8 after load."""

from __future__ import annotations

import warnings
from collections.abc import Callable
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


# A fixed, varied English text (not from any evaluation set) whose activations set the
# smoothing scales: prose, dialogue, numbers, code and a list, like what people send.
CALIBRATION_TEXT = """\
The library opens at nine on weekdays and at ten on Saturdays; it is closed on Sundays.
"Could you summarize the report before the meeting?" she asked. "Only the key figures."
Revenue rose 12.5% to $4.2 million in the third quarter, while costs fell by 3%.
def area(radius):
    return 3.14159 * radius ** 2
Ingredients: 200 g flour, 2 eggs, 300 ml milk, a pinch of salt. Whisk until smooth.
The committee will review the proposal in March and publish its decision in April.
Photosynthesis turns light, water and carbon dioxide into glucose and oxygen.
Dear team, thank you all for the hard work this week. Let's meet on Friday at 3 pm.
Q: What is the capital of Australia? A: Canberra, not Sydney, as many people think.
The train to Edinburgh leaves from platform 4 at 17:45 and arrives at 22:10.
"""
SMOOTHING_ALPHA = 0.5  # how much of an activation channel's range moves into the weights


def _running_absmax(store: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = (inputs[0] if name.startswith("in:") else output).detach().abs()
        channel_max = x.flatten(0, -2).amax(0).float()
        previous = store.get(name)
        store[name] = channel_max if previous is None else torch.maximum(previous, channel_max)

    return hook


def _smoothing_groups(model: nn.Module) -> list[tuple[nn.Module, list[nn.Linear], str]]:
    """(scale owner, the Linears reading its output, how the owner is scaled) for each
    place in a Llama-style decoder where activation scales can move into weights exactly:
    an RMSNorm's weight (before q/k/v and before gate/up), and up_proj's rows (before
    down_proj, since gate * up is linear in up)."""
    groups: list[tuple[nn.Module, list[nn.Linear], str]] = []
    for layer in model.modules():
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        norm_in = getattr(layer, "input_layernorm", None)
        norm_post = getattr(layer, "post_attention_layernorm", None)
        projections = ("q_proj", "k_proj", "v_proj")
        if attention is not None and norm_in is not None and hasattr(norm_in, "weight"):
            linears = [getattr(attention, name, None) for name in projections]
            if all(isinstance(m, nn.Linear) for m in linears):
                groups.append((norm_in, linears, "norm"))  # type: ignore[arg-type]
        if mlp is not None and norm_post is not None and hasattr(norm_post, "weight"):
            gate, up, down = (getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
            if all(isinstance(m, nn.Linear) for m in (gate, up, down)):
                groups.append((norm_post, [gate, up], "norm"))  # type: ignore[list-item]
                groups.append((up, [down], "rows"))  # type: ignore[list-item,arg-type]
    return groups


def smooth_activations(
    model: nn.Module, calibration_ids: torch.Tensor, alpha: float = SMOOTHING_ALPHA
) -> int:
    """SmoothQuant-style smoothing: divide each activation channel by a scale and multiply
    the weights that read it by the same scale. The float model computes the same function
    (up to rounding), but activation outliers, which per-tensor int8 quantization of
    activations handles badly, move into the weights, which are quantized per channel.
    Returns how many groups were smoothed (0 for architectures it does not know)."""
    groups = _smoothing_groups(model)
    if not groups:
        return 0
    maxes: dict[str, torch.Tensor] = {}
    hooks = [
        linears[0].register_forward_hook(_running_absmax(maxes, f"in:{index}"))
        for index, (_, linears, _) in enumerate(groups)
    ]
    try:
        with torch.inference_mode():
            model(input_ids=calibration_ids.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for index, (owner, linears, kind) in enumerate(groups):
            activation = maxes[f"in:{index}"].clamp(min=1e-5)
            weight = torch.stack([m.weight.abs().amax(0).float() for m in linears]).amax(0)
            scale = (activation.pow(alpha) / weight.clamp(min=1e-5).pow(1 - alpha)).clamp(1e-5)
            owner_weight: torch.Tensor = owner.weight  # type: ignore[assignment]
            if kind == "norm":
                owner_weight.div_(scale.to(owner_weight.dtype))
            else:
                owner_weight.div_(scale.to(owner_weight.dtype)[:, None])
                bias = getattr(owner, "bias", None)
                if bias is not None:
                    bias.div_(scale.to(bias.dtype))
            for linear in linears:
                linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])
    return len(groups)


def apply_int8_dynamic(model: nn.Module, calibration_ids: torch.Tensor | None = None) -> nn.Module:
    """Dynamic int8 quantization for CPU inference: Linear layers with per-channel weight
    scales, GRU/LSTM layers per tensor. With `calibration_ids` (token ids of a sample text),
    activation outliers are smoothed into the weights first (Llama-style decoders).

    A language model's output projection (the vocabulary head) stays float: quantizing it
    costs the most quality per byte saved, and where it shares the embedding's weights it
    saves nothing."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    _conv1d_to_linear(model)
    if calibration_ids is not None:
        smooth_activations(model, calibration_ids)
    output_embeddings = getattr(model, "get_output_embeddings", None)
    head = output_embeddings() if callable(output_embeddings) else None
    spec: dict[Any, Any] = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is nn.Linear and module is not head
    }
    spec.update({nn.GRU: default_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig})
    # torch.ao marks itself deprecated in favour of torchao; it is still the CPU path that
    # needs no extra build, so silence the notice rather than every log line of the worker.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
