"""SGD with Nesterov momentum and per-epoch cosine annealing with warm restarts (SGDR): the schedule of every
ENAS child, search and final (enas_reference.md §4: lr_min + ½(lr_max − lr_min)(1 + cos(π T_cur / T_i)),
T_0 = 10, T_mul = 2, stepped once per epoch)."""
from __future__ import annotations

from typing import Iterable

import torch


def sgd_with_restarts(params: Iterable[torch.nn.Parameter], cfg, **kernel):
    """`cfg` holds lr_max, lr_min, lr_t0_epochs, lr_t_mult, momentum, nesterov, weight_decay (PyTorch's
    convention: 2 x the official l2_reg). `kernel`: fused=True or foreach=True."""
    optimizer = torch.optim.SGD(params, lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay, **kernel)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.lr_t0_epochs, T_mult=cfg.lr_t_mult, eta_min=cfg.lr_min)
    return optimizer, scheduler
