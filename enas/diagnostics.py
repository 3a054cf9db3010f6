"""Collapse diagnostics: is the sampler still exploring, and is it settling on cells without parameters?

Weight-sharing searches tend to collapse onto skips and pools, which train fastest under sharing (ENAS on
NAS-Bench-201 returned the all-skip cell in every run, nb201.md §4). Logged every epoch (metrics.jsonl, W&B):
- `ops/<op>`: share of each op among the op decisions of the epoch's sampled architectures;
- `most_likely/ops/<op>`: the same in the policy's most likely architecture (controller strategies);
- `diag/param_free_share`, `diag/most_likely_param_free_share`: share of parameter-free ops (skip, identity,
  pools, none) in the two;
- `diag/distinct_archs`: distinct architectures among the epoch's samples (1 = the sampler repeats one cell);
- `controller/entropy_<kind>` (from the controller phase): entropy of one decision as a share of its maximum.
`collapse_warning` turns them into a sentence when the policy is nearly certain and mostly parameter-free.
"""
from __future__ import annotations

PARAM_FREE_OPS = frozenset({"none", "skip_connect", "identity", "avg_pool_3x3", "max_pool_3x3"})


def op_decision_columns(space) -> list[int]:
    """Positions of the op decisions among a rollout's choices."""
    columns, at = [], 0
    for step in space.steps():
        if step.kind == "op":
            columns.append(at)
        at += step.num_columns if step.is_choice else 0
    return columns


def op_frequencies(space, archs: list, prefix: str = "ops/") -> dict[str, float]:
    """Share of each op among all op decisions of `archs`: {"<prefix><name>": share}."""
    names = getattr(space, "op_names", None)
    if not names or not archs:
        return {}
    columns, counts = op_decision_columns(space), [0] * len(names)
    for arch in archs:
        choices = space.to_choices(arch)
        for c in columns:
            counts[choices[c]] += 1
    total = sum(counts)
    return {f"{prefix}{name}": n / total for name, n in zip(names, counts)}


def param_free_share(frequencies: dict[str, float], prefix: str = "ops/") -> float:
    return sum(share for key, share in frequencies.items() if key.removeprefix(prefix) in PARAM_FREE_OPS)


def sample_diagnostics(space, archs: list) -> dict[str, float]:
    """The epoch's diagnostics from its sampled architectures."""
    if not archs:
        return {}
    sampled = op_frequencies(space, archs)
    record = {**sampled, "diag/distinct_archs": len({a.to_enas_string() for a in archs}),
              "diag/num_sampled": len(archs)}
    return {**record, "diag/param_free_share": param_free_share(sampled)} if sampled else record


def policy_diagnostics(space, most_likely) -> dict[str, float]:
    """The op shares of the policy's most likely architecture (controller strategies)."""
    best = op_frequencies(space, [most_likely], prefix="most_likely/ops/") if most_likely is not None else {}
    return {**best, "diag/most_likely_param_free_share": param_free_share(best, "most_likely/ops/")} if best else {}


def collapse_warning(record: dict, entropy_threshold: float, uniform_shared_pass: bool = False) -> str | None:
    """A sentence for the log when the op policy is nearly certain (relative entropy below the threshold) and
    parameter-free ops make up most of the sampled ops (or of the most likely architecture); else None.
    `uniform_shared_pass`: the shared weights already train on uniform architectures (trainer.shared_sampling),
    so the advice is about the controller alone."""
    entropy = record.get("controller/entropy_op")
    free = max(record.get("diag/param_free_share", 0.0), record.get("diag/most_likely_param_free_share", 0.0))
    if entropy is None or entropy >= entropy_threshold or free <= 0.5:
        return None
    if uniform_shared_pass:
        advice = ("The shared weights already train on uniform architectures, so the rewards themselves favour these "
                  "cells: consider a smaller controller.lr or controller.tanh_op (the op logits' bound; at ENAS's 1.1 "
                  "no op takes more than 69% of a five-way decision), a larger controller.entropy_weight, or ")
    else:
        advice = ("Consider trainer.shared_sampling=uniform (the shared weights then train on uniform architectures "
                  "and the controller cannot train its own picks up), a smaller controller.tanh_op (the op logits' "
                  "bound), a larger controller.entropy_weight, or ")
    return (f"the controller has collapsed: its op decisions keep {entropy:.0%} of their maximum entropy and "
            f"{free:.0%} of the ops it picks have no parameters (skips, pools, none). Such cells train fastest "
            f"with shared weights but rarely win when trained alone; expect a poor architecture. {advice}"
            "compare with trainer.strategy=random.")
