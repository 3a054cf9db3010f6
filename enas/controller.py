"""The ENAS LSTM controller: a policy over a search space's step list, sampling many architectures per call.

Reference: enas_reference.md §3.1-§3.2 (melodyguan/enas src/cifar10/micro_controller.py). A 1-layer LSTM of
64 units without bias; a learned start input `g_emb`; op logits `h W_soft + b_soft`; input choices by additive
attention `v^T tanh(W1 h_j + W2 h_t)` over the anchors of the current block; logits shaped as c * tanh(logits);
all parameters U(-0.1, 0.1) except `b_soft`. The controller knows steps, never spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from enas.spaces.base import Step


@dataclass
class Rollout:
    """K sampled architectures as choices [K, num_choice_steps], with their summed log-probs and entropies [K]."""

    choices: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor


class Controller(nn.Module):
    def __init__(self, steps: Sequence[Step], lstm_size: int = 64, tanh_input: float | None = 1.10,
                 tanh_op: float | None = 0.44, temperature: float | None = None,
                 op_bias_init: Sequence[float] | None = None, init_range: float = 0.1):
        super().__init__()
        self.steps = list(steps)
        op_sizes = {s.num_choices for s in self.steps if s.kind == "op"}
        if len(op_sizes) > 1:
            raise ValueError(f"every op step must offer the same ops; got choice counts {sorted(op_sizes)}")
        num_ops = op_sizes.pop() if op_sizes else 1
        self.tanh_input, self.tanh_op, self.temperature = tanh_input, tanh_op, temperature
        self.lstm = nn.LSTMCell(lstm_size, lstm_size, bias=False)
        self.g_emb = nn.Parameter(torch.empty(1, lstm_size))
        self.w_emb = nn.Embedding(num_ops, lstm_size)
        self.w_soft = nn.Linear(lstm_size, num_ops, bias=False)
        self.b_soft = nn.Parameter(torch.empty(num_ops))
        self.w_attn_1 = nn.Linear(lstm_size, lstm_size, bias=False)
        self.w_attn_2 = nn.Linear(lstm_size, lstm_size, bias=False)
        self.v_attn = nn.Linear(lstm_size, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        if op_bias_init is not None:
            if len(op_bias_init) != num_ops:
                raise ValueError(f"op_bias_init needs {num_ops} values (one per op), got {len(op_bias_init)}")
            with torch.no_grad():
                self.b_soft.copy_(torch.tensor(op_bias_init, dtype=torch.float32))
        # fixed logit biases live in buffers so they move with the module (no host copy per step)
        self._bias_names: dict[tuple[float, ...], str] = {}
        for bias in dict.fromkeys(s.logit_bias for s in self.steps if s.logit_bias is not None):
            self._bias_names[bias] = f"logit_bias_{len(self._bias_names)}"
            self.register_buffer(self._bias_names[bias], torch.tensor(bias, dtype=torch.float32), persistent=False)

    def _shape(self, logits: torch.Tensor, constant: float | None) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        return constant * torch.tanh(logits) if constant is not None else logits

    def _logits(self, step: Step, h: torch.Tensor, keys: list[torch.Tensor]) -> torch.Tensor:
        if step.kind == "input":
            query = torch.tanh(torch.stack(keys[:step.num_choices], 1) + self.w_attn_2(h).unsqueeze(1))
            return self._shape(self.v_attn(query).squeeze(-1), self.tanh_input)
        logits = self._shape(self.w_soft(h) + self.b_soft, self.tanh_op)
        if step.logit_bias is not None:
            logits = logits + getattr(self, self._bias_names[step.logit_bias])
        return logits

    def forward(self, num_samples: int = 1, choices: torch.Tensor | None = None, greedy: bool = False,
                generator: torch.Generator | None = None) -> Rollout:
        """Sample `num_samples` rollouts in one batched pass, or score the given `choices` [K, n] (teacher
        forcing), or take the most likely choice at every step (`greedy`)."""
        k = num_samples if choices is None else choices.shape[0]
        device = self.g_emb.device
        h = c = torch.zeros(k, self.g_emb.shape[1], device=device)
        start = self.g_emb.expand(k, -1)
        x, block, anchors, keys = start, None, [], []
        taken, log_prob, entropy = [], torch.zeros(k, device=device), torch.zeros(k, device=device)
        for step in self.steps:
            if step.block != block:
                block, anchors, keys = step.block, [], []
            h, c = self.lstm(x, (h, c))
            if step.kind == "anchor":
                keys.append(self.w_attn_1(h))
                anchors.append(torch.zeros_like(h) if step.feed_zero else h)
                x = start
                continue
            logits = self._logits(step, h, keys)
            dist = Categorical(logits=logits)
            if choices is not None:
                choice = choices[:, len(taken)]
            elif greedy:
                choice = logits.argmax(-1)
            else:
                choice = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(1)
            taken.append(choice)
            log_prob = log_prob + dist.log_prob(choice)
            entropy = entropy + dist.entropy()
            if step.kind == "input":
                x = torch.stack(anchors, 1)[torch.arange(k, device=device), choice]
            else:
                x = self.w_emb(choice)
        return Rollout(torch.stack(taken, 1), log_prob, entropy)
