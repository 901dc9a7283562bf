"""The architecture of an RNN language model (`RNNConfig`) and its torch module (`CharRNN`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

MODEL_TYPE = "atelier-rnn"  # the marker in config.json that tells this backend's folders apart
KINDS = ("gru", "lstm")

# A GRU's state is one tensor (h); an LSTM's is a pair (h, c). Each is (layers, batch, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RNNConfig:
    vocab_size: int
    kind: str = "gru"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be at least 0 and below 1, not {self.dropout!r}")

    def to_json(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> RNNConfig:
        """From a config.json; its other keys (training metrics, the marker) are ignored."""
        if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
            found = data.get("model_type") if isinstance(data, dict) else None
            raise ValueError(f"model_type is {found!r}, not {MODEL_TYPE!r}")
        names = ("vocab_size", "kind", "embedding_size", "hidden_size", "num_layers", "dropout")
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"config.json lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in names})


class CharRNN(nn.Module):
    """Embedding, a stacked GRU or LSTM, dropout, and a linear layer to next-token logits."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        recurrent = nn.GRU if config.kind == "gru" else nn.LSTM
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.rnn = recurrent(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            # torch applies this dropout between stacked layers only (it warns with one layer).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, vocab) for ids (batch, time), and the state after them."""
        output, state = self.rnn(self.embedding(ids), state)
        return self.head(self.dropout(output)), state


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated back-propagation through time)."""
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()
