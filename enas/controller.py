"""The ENAS LSTM controller: a policy over a search space's step list, sampling many architectures per call.

Reference: enas_reference.md §3.1-§3.3 (melodyguan/enas src/cifar10/micro_controller.py, general_controller.py).
A 1-layer LSTM of 64 units without bias; a learned start input `g_emb`; op logits `h W_soft (+ b_soft, micro
only)`; input choices by additive attention `v^T tanh(W1 h_j + W2 h_t)` over the anchors of the current block;
logits shaped as c * tanh(logits); all parameters U(-0.1, 0.1) except `b_soft`. Macro skip steps (§3.3) score
each earlier anchor j with the same attention q_j, sample skip_j from logits c * tanh([-q_j, q_j]) (so
P(skip_j) = sigmoid(2c tanh q_j)), and report the official skip penalty. The controller knows steps, never spaces.
Op steps of a vocab other than "op" (NAS-RL's filter height, width and count, Zoph & Le 2017 §3.1) get their own
embedding and softmax, registered after every ENAS parameter so single-vocab controllers initialise as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from enas.spaces.base import Step


@dataclass
class Rollout:
    """K sampled architectures as choices [K, num_columns], with their summed log-probs and entropies [K].

    skip_penalty [K]: the macro skip penalty (mean over skip steps; zeros without skip steps); skip_rate [K]: the
    fraction of skip decisions answered yes (None without skip steps). entropy_by_kind: per decision kind ("op",
    "input", "skip") the mean entropy of one decision as a share of its maximum log(n) [K]: 1 is uniform, 0 certain
    (the collapse diagnostics, enas.diagnostics).
    """

    choices: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    skip_penalty: torch.Tensor | None = None
    skip_rate: torch.Tensor | None = None
    entropy_by_kind: dict[str, torch.Tensor] = field(default_factory=dict)


class Controller(nn.Module):
    """tanh_input shapes every attention decision (input and skip steps), tanh_op the op logits. op_bias: a
    learnable op-logit bias `b_soft` (micro: yes; macro: no, §3.1). skip_target: the skip penalty's target
    probability t in sum_k sigmoid(l_k) log(sigmoid(l_k) / [1-t, t]_k) (general_controller.py). As in the
    official code the penalty pulls sigmoid(c tanh q) to t, so P(skip) = sigmoid(2c tanh q) heads for
    t^2 / (t^2 + (1-t)^2) ~ 0.31 at t = 0.4, not for t itself. Entropies are full (summed over a step's
    skips); the official macro controller adds only the sampled action's -p log p (§3.3)."""

    def __init__(self, steps: Sequence[Step], lstm_size: int = 64, tanh_input: float | None = 1.10,
                 tanh_op: float | None = 0.44, temperature: float | None = None,
                 op_bias_init: Sequence[float] | None = None, init_range: float = 0.1, op_bias: bool = True,
                 skip_target: float = 0.4):
        super().__init__()
        self.steps = list(steps)
        vocab_sizes: dict[str, set[int]] = {}
        for s in self.steps:
            if s.kind == "op":
                vocab_sizes.setdefault(s.vocab, set()).add(s.num_choices)
        for vocab, sizes in vocab_sizes.items():
            if len(sizes) > 1:
                raise ValueError(f"every op step of vocab {vocab!r} must offer the same ops; got choice counts "
                                 f"{sorted(sizes)}")
        op_sizes = vocab_sizes.pop("op", set())
        if op_bias_init is not None and not op_bias:
            raise ValueError("op_bias_init needs op_bias=True (a learnable op-logit bias)")
        if not 0.0 < skip_target < 1.0:
            raise ValueError(f"skip_target must be in (0, 1), got {skip_target}")
        num_ops = op_sizes.pop() if op_sizes else 1
        self.tanh_input, self.tanh_op, self.temperature = tanh_input, tanh_op, temperature
        self.lstm = nn.LSTMCell(lstm_size, lstm_size, bias=False)
        self.g_emb = nn.Parameter(torch.empty(1, lstm_size))
        self.w_emb = nn.Embedding(num_ops, lstm_size)
        self.w_soft = nn.Linear(lstm_size, num_ops, bias=False)
        # registration order fixes the init stream: keep b_soft where it was
        self.b_soft = nn.Parameter(torch.empty(num_ops)) if op_bias else None
        self.w_attn_1 = nn.Linear(lstm_size, lstm_size, bias=False)
        self.w_attn_2 = nn.Linear(lstm_size, lstm_size, bias=False)
        self.v_attn = nn.Linear(lstm_size, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        # other vocabs built and drawn after every ENAS parameter: those stay exactly as without them
        self.vocab_emb = nn.ModuleDict({v: nn.Embedding(n.pop(), lstm_size) for v, n in vocab_sizes.items()})
        self.vocab_soft = nn.ModuleDict({v: nn.Linear(lstm_size, self.vocab_emb[v].num_embeddings, bias=op_bias)
                                         for v in vocab_sizes})
        for p in [*self.vocab_emb.parameters(), *self.vocab_soft.parameters()]:
            nn.init.uniform_(p, -init_range, init_range)
        if op_bias_init is not None:
            if len(op_bias_init) != num_ops:
                raise ValueError(f"op_bias_init needs {num_ops} values (one per op), got {len(op_bias_init)}")
            with torch.no_grad():
                self.b_soft.copy_(torch.tensor(op_bias_init, dtype=torch.float32))
        # fixed logit biases and the skip targets live in buffers so they move with the module (no host copy)
        self._bias_names: dict[tuple[float, ...], str] = {}
        for bias in dict.fromkeys(s.logit_bias for s in self.steps if s.logit_bias is not None):
            self._bias_names[bias] = f"logit_bias_{len(self._bias_names)}"
            self.register_buffer(self._bias_names[bias], torch.tensor(bias, dtype=torch.float32), persistent=False)
        self.register_buffer("skip_targets", torch.tensor([1.0 - skip_target, skip_target]), persistent=False)

    def _shape(self, logits: torch.Tensor, constant: float | None) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        return constant * torch.tanh(logits) if constant is not None else logits

    def _attention(self, h: torch.Tensor, keys: list[torch.Tensor], n: int) -> torch.Tensor:
        """v^T tanh(W1 h_j + W2 h) for the first n anchors of the block: [K, n]."""
        return self.v_attn(torch.tanh(torch.stack(keys[:n], 1) + self.w_attn_2(h).unsqueeze(1))).squeeze(-1)

    def _logits(self, step: Step, h: torch.Tensor, keys: list[torch.Tensor]) -> torch.Tensor:
        if step.kind == "input":
            return self._shape(self._attention(h, keys, step.num_choices), self.tanh_input)
        if step.kind == "skip":  # [K, n, 2]: (no, yes) per earlier anchor
            q = self._attention(h, keys, step.num_choices)
            return self._shape(torch.stack([-q, q], -1), self.tanh_input)
        if step.vocab != "op":
            logits = self.vocab_soft[step.vocab](h)
        else:
            logits = self.w_soft(h) if self.b_soft is None else self.w_soft(h) + self.b_soft
        logits = self._shape(logits, self.tanh_op)
        if step.logit_bias is not None:
            logits = logits + getattr(self, self._bias_names[step.logit_bias])
        return logits

    def _skip_penalty(self, logits: torch.Tensor) -> torch.Tensor:
        """sum_j sum_k sigmoid(l_jk) log(sigmoid(l_jk) / t_k): sigmoid of each shaped logit, not the softmax."""
        return (torch.sigmoid(logits) * (F.logsigmoid(logits) - self.skip_targets.log())).sum((1, 2))

    @staticmethod
    def _choose(logits: torch.Tensor, choices: torch.Tensor | None, column: int, greedy: bool,
                generator: torch.Generator | None) -> torch.Tensor:
        """The given, the most likely or a sampled choice per row of `logits` [K, n] or [K, m, n]."""
        shape = logits.shape[:-1]
        if choices is not None:
            return choices[:, column:column + shape[1:].numel()].reshape(shape)
        if greedy:
            return logits.argmax(-1)
        probs = F.softmax(logits, -1).reshape(-1, logits.shape[-1])
        return torch.multinomial(probs, 1, generator=generator).reshape(shape)

    @staticmethod
    def _skip_input(chosen: torch.Tensor, anchors: list[torch.Tensor]) -> torch.Tensor:
        """Sum of the chosen anchors / (1 + #chosen): the zero vector when no skip is taken (§9)."""
        chosen = chosen.to(anchors[0].dtype)
        return (chosen.unsqueeze(-1) * torch.stack(anchors, 1)).sum(1) / (1.0 + chosen.sum(-1, keepdim=True))

    def forward(self, num_samples: int = 1, choices: torch.Tensor | None = None, greedy: bool = False,
                generator: torch.Generator | None = None, num_steps: int | None = None) -> Rollout:
        """Sample `num_samples` rollouts in one batched pass, or score the given `choices` [K, n] (teacher
        forcing), or take the most likely choice at every step (`greedy`; a skip is taken iff P(skip) > 0.5).
        num_steps: walk only the first num_steps steps (NAS-RL's growing depth: a shallower rollout is a prefix)."""
        k = num_samples if choices is None else choices.shape[0]
        device = self.g_emb.device
        h = c = torch.zeros(k, self.g_emb.shape[1], device=device)
        start = self.g_emb.expand(k, -1)
        x, block, anchors, keys = start, None, [], []
        taken, skips, column = [], [], 0
        log_prob, entropy, penalty = (torch.zeros(k, device=device) for _ in range(3))
        relative: dict[str, list[torch.Tensor]] = {}  # per kind: each decision's entropy / log(n), [K] or [K, m]
        for step in self.steps[:num_steps]:
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
            choice = self._choose(logits, choices, column, greedy, generator)
            column += step.num_columns
            taken.append(choice.reshape(k, -1))
            step_log_prob, step_entropy = dist.log_prob(choice), dist.entropy()
            relative.setdefault(step.kind, []).append(step_entropy.detach().reshape(k, -1) / math.log(logits.shape[-1]))
            if step.kind == "skip":  # independent yes/no per earlier anchor; then this step is an anchor itself
                skips.append(choice)
                step_log_prob, step_entropy = step_log_prob.sum(-1), step_entropy.sum(-1)
                penalty = penalty + self._skip_penalty(logits)
                x = self._skip_input(choice, anchors[:step.num_choices])
                keys.append(self.w_attn_1(h))
                anchors.append(h)
            elif step.kind == "input":
                x = torch.stack(anchors, 1)[torch.arange(k, device=device), choice]
            else:
                x = self.w_emb(choice) if step.vocab == "op" else self.vocab_emb[step.vocab](choice)
            log_prob = log_prob + step_log_prob
            entropy = entropy + step_entropy
        by_kind = {kind: torch.cat(values, 1).mean(1) for kind, values in relative.items()}
        if not skips:
            return Rollout(torch.cat(taken, 1), log_prob, entropy, penalty, None, by_kind)
        skip_rate = torch.cat(skips, 1).to(log_prob.dtype).mean(1)
        return Rollout(torch.cat(taken, 1), log_prob, entropy, penalty / len(skips), skip_rate, by_kind)
