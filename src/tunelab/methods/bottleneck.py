"""The bottleneck adapter layer (Houlsby et al., 2019), an `nn.Module`: a sublayer's output
plus up(act(down(output))), the up-projection starting at zero so the model starts unchanged.
Its own file because defining it imports torch; `methods/adapter.py` binds it deferred."""

from __future__ import annotations

import torch


class BottleneckAdapter(torch.nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: torch.nn.Module):
        super().__init__()
        self.down = torch.nn.Linear(hidden, bottleneck)
        self.act = activation
        self.up = torch.nn.Linear(bottleneck, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., hidden] -> [..., hidden]
        return hidden + self.up(self.act(self.down(hidden)))
