"""The checks of a composed config that types alone cannot express: allowed names, ranges and combinations. Each
message names the bad value and what is allowed; run.py turns a failure into one line and exit status 2."""
from __future__ import annotations

from enas.config import Config

SPACE_NAMES = ("micro", "macro", "nb201", "nasrl_conv")
NO_SUPERNET_SPACES = ("nasrl_conv",)  # searched by nas_rl or a training-free strategy, never with shared weights
MODES = ("search", "derive", "train", "eval", "bench", "report", "rank_check")
DERIVE_SCORES = ("acc", "loss")  # what derive ranks candidates by (enas.derive.Candidate.score)
STRATEGIES = ("enas", "random", "naswot", "params", "random_pick", "nas_rl")
NAS_RL_REWARDS, NAS_RL_SHAPINGS = ("train", "benchmark"), ("zoph",)
PREFILTERS = ("naswot", "params")
REWARD_SCORES = ("acc", "loss")  # a rewarded child's score (enas.judges.shared_weight_rewards)
SHARED_SAMPLING = ("policy", "uniform")  # which architectures the shared pass trains (enas.search)
GRAD_SYNCS = ("ddp", "allreduce_used")


def validate(cfg: Config) -> None:
    """Checks that types alone cannot express; each message names the bad value and what is allowed."""
    checks = [
        (cfg.mode in MODES, f"mode={cfg.mode!r} is not one of {', '.join(MODES)}"),
        (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"),
         f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N"),
        (cfg.trainer.strategy in STRATEGIES, f"trainer.strategy={cfg.trainer.strategy!r} is not one of "
                                             f"{', '.join(STRATEGIES)}"),
        (cfg.trainer.epochs >= 1, f"trainer.epochs={cfg.trainer.epochs}; must be >= 1"),
        (cfg.trainer.batch_size >= 1, f"trainer.batch_size={cfg.trainer.batch_size}; must be >= 1"),
        (cfg.trainer.lr_max >= cfg.trainer.lr_min >= 0, f"trainer.lr_max={cfg.trainer.lr_max} and lr_min="
                                                        f"{cfg.trainer.lr_min}; need lr_max >= lr_min >= 0"),
        (cfg.search_space.name in SPACE_NAMES, f"search_space.name={cfg.search_space.name!r} is not one of "
                                               f"{', '.join(SPACE_NAMES)}"),
        (cfg.search_space.name == "nasrl_conv"  # its channels are a stem width, 0 allowed: checked below
         or (cfg.search_space.channels % 2 == 0 and cfg.search_space.channels > 0),
         f"search_space.channels={cfg.search_space.channels}; must be a positive even number "
         "(factorized reduction splits channels in two)"),
        (cfg.search_space.name != "nasrl_conv"
         or (cfg.search_space.channels >= 0 and cfg.search_space.num_layers >= 1),
         f"search_space.channels={cfg.search_space.channels}, num_layers={cfg.search_space.num_layers}; nasrl_conv "
         "needs channels >= 0 (the stem width; 0: no stem) and num_layers >= 1"),
        (cfg.search_space.name == "nasrl_conv" or getattr(cfg.search_space, "num_layers", 3) >= 3,
         f"search_space.num_layers={getattr(cfg.search_space, 'num_layers', None)}; must be >= 3"),
        (cfg.search_space.name != "nb201" or cfg.search_space.num_layers % 3 == 0,
         f"search_space.num_layers={cfg.search_space.num_layers}; nb201 needs a multiple of 3 (cells in 3 stages)"),
        (0 <= getattr(cfg.search_space, "dropout", 0) < 1,
         f"search_space.dropout={getattr(cfg.search_space, 'dropout', None)}; allowed [0, 1)"),
        (0 < cfg.controller.skip_target < 1 and cfg.controller.skip_weight >= 0,
         f"controller.skip_target={cfg.controller.skip_target}, skip_weight={cfg.controller.skip_weight}; need "
         "0 < skip_target < 1 and skip_weight >= 0"),
        (cfg.controller.num_updates >= 0 and cfg.controller.num_aggregate >= 1,
         f"controller.num_updates={cfg.controller.num_updates}, num_aggregate={cfg.controller.num_aggregate}; "
         "need num_updates >= 0 and num_aggregate >= 1"),
        (cfg.derive.num_samples >= 0 and cfg.derive.top_k >= 1,
         f"derive.num_samples={cfg.derive.num_samples}, top_k={cfg.derive.top_k}; need >= 0 and >= 1"),
        (cfg.derive.score in DERIVE_SCORES,
         f"derive.score={cfg.derive.score!r}; allowed {', '.join(DERIVE_SCORES)}"),
        (cfg.derive.prefilter is None or cfg.derive.prefilter in PREFILTERS,
         f"derive.prefilter={cfg.derive.prefilter!r}; allowed null (none) or {', '.join(PREFILTERS)}"),
        (cfg.derive.prefilter_samples >= 1 and cfg.derive.prefilter_top_k >= 1,
         f"derive.prefilter_samples={cfg.derive.prefilter_samples}, prefilter_top_k={cfg.derive.prefilter_top_k}; "
         "each must be >= 1"),
        (cfg.derive.rank_check_k >= 0 and cfg.derive.rank_check_epochs >= 1 and cfg.derive.proxy_epochs >= 0
         and cfg.derive.proxy_seeds >= 1,
         f"derive.rank_check_k={cfg.derive.rank_check_k}, rank_check_epochs={cfg.derive.rank_check_epochs}, "
         f"proxy_epochs={cfg.derive.proxy_epochs}, proxy_seeds={cfg.derive.proxy_seeds}; need rank_check_k >= 0 "
         "(0: off), rank_check_epochs >= 1, proxy_epochs >= 0 (0: off) and proxy_seeds >= 1"),
        (0 <= cfg.trainer.warmup_epochs, f"trainer.warmup_epochs={cfg.trainer.warmup_epochs}; must be >= 0 (0: off)"),
        (cfg.trainer.shared_sampling in SHARED_SAMPLING,
         f"trainer.shared_sampling={cfg.trainer.shared_sampling!r}; allowed {', '.join(SHARED_SAMPLING)}"),
        (cfg.trainer.reward in REWARD_SCORES,
         f"trainer.reward={cfg.trainer.reward!r}; allowed {', '.join(REWARD_SCORES)}"),
        (0 <= cfg.trainer.few_shot_epoch < max(cfg.trainer.epochs, 1),
         f"trainer.few_shot_epoch={cfg.trainer.few_shot_epoch}; allowed 0 (off) or an epoch before trainer.epochs="
         f"{cfg.trainer.epochs}, when the supernet splits"),
        (0 <= cfg.trainer.collapse_entropy <= 1, f"trainer.collapse_entropy={cfg.trainer.collapse_entropy}; allowed "
                                                 "[0, 1] (a share of the maximum entropy)"),
        (cfg.benchmark.path is None or cfg.search_space.name == "nb201",
         f"benchmark.path={cfg.benchmark.path!r} is set but search_space={cfg.search_space.name}; NAS-Bench-201 "
         "lookups exist only for search_space=nb201"),
        *_nas_rl_checks(cfg),
        (cfg.rank_check.num_archs >= 2 and cfg.rank_check.epochs >= 1,
         f"rank_check.num_archs={cfg.rank_check.num_archs}, epochs={cfg.rank_check.epochs}; need num_archs >= 2 "
         "(a ranking) and epochs >= 1"),
        (cfg.naswot.num_samples >= 1, f"naswot.num_samples={cfg.naswot.num_samples}; must be >= 1"),
        (cfg.naswot.batch_size >= 2, f"naswot.batch_size={cfg.naswot.batch_size}; must be >= 2 (the score compares "
                                     "images with each other)"),
        (cfg.retrain.epochs >= 1 and cfg.retrain.batch_size >= 1 and cfg.retrain.eval_batch_size >= 1,
         f"retrain.epochs={cfg.retrain.epochs}, batch_size={cfg.retrain.batch_size}, eval_batch_size="
         f"{cfg.retrain.eval_batch_size}; each must be >= 1"),
        (0 < cfg.retrain.drop_path_keep <= 1, f"retrain.drop_path_keep={cfg.retrain.drop_path_keep}; allowed (0, 1] "
                                              "(1 turns drop-path off)"),
        (0 <= cfg.retrain.dropout < 1, f"retrain.dropout={cfg.retrain.dropout}; allowed [0, 1)"),
        (cfg.retrain.lr_max >= cfg.retrain.lr_min >= 0, f"retrain.lr_max={cfg.retrain.lr_max} and lr_min="
                                                        f"{cfg.retrain.lr_min}; need lr_max >= lr_min >= 0"),
        (cfg.mode != "train" or cfg.arch, "mode=train needs arch=<best_arch.json path or a published name: "
                                          "enas_micro_paper, enas_macro_paper>"),
        (cfg.mode != "eval" or cfg.checkpoint, "mode=eval needs checkpoint=<final.pt of a mode=train run>"),
        (cfg.logger.name in ("none", "wandb"), f"logger.name={cfg.logger.name!r}; allowed none, wandb"),
        (cfg.dist.nproc_per_node >= 1 and cfg.dist.grad_sync in GRAD_SYNCS
         and cfg.dist.backend in (None, "gloo", "nccl"),
         f"dist.nproc_per_node={cfg.dist.nproc_per_node}, grad_sync={cfg.dist.grad_sync!r}, backend="
         f"{cfg.dist.backend!r}; need nproc_per_node >= 1, grad_sync one of {', '.join(GRAD_SYNCS)}, backend null "
         "(nccl on CUDA, gloo on CPU), gloo or nccl"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _nas_rl_checks(cfg: Config) -> list[tuple[bool, str]]:
    """trainer.strategy=nas_rl and search_space=nasrl_conv (a space without shared weights)."""
    n, space = cfg.nas_rl, cfg.search_space.name
    checks = [
        (space not in NO_SUPERNET_SPACES or cfg.mode != "search" or cfg.trainer.strategy not in ("enas", "random"),
         f"trainer.strategy={cfg.trainer.strategy} needs a supernet (shared weights), but search_space={space} has "
         "none; use trainer.strategy=nas_rl (every child trained from scratch) or naswot, params, random_pick"),
        (space not in NO_SUPERNET_SPACES or cfg.mode not in ("derive", "bench"),
         f"mode={cfg.mode} needs a supernet (shared weights), but search_space={space} has none"),
    ]
    if cfg.trainer.strategy != "nas_rl":
        return checks
    return checks + [
        (n.num_updates >= 1 and n.children_per_update >= 1 and n.child_epochs >= 1 and n.workers >= 1,
         f"nas_rl.num_updates={n.num_updates}, children_per_update={n.children_per_update}, child_epochs="
         f"{n.child_epochs}, workers={n.workers}; each must be >= 1"),
        (n.reward in NAS_RL_REWARDS, f"nas_rl.reward={n.reward!r} is not one of {', '.join(NAS_RL_REWARDS)}"),
        (n.reward_shaping is None or n.reward_shaping in NAS_RL_SHAPINGS,
         f"nas_rl.reward_shaping={n.reward_shaping!r}; allowed null (the validation accuracy) or "
         f"{', '.join(NAS_RL_SHAPINGS)} (the max of the last 5 epochs, cubed)"),
        (n.reward != "benchmark" or space == "nb201",
         f"nas_rl.reward=benchmark looks rewards up in NAS-Bench-201, which holds only search_space=nb201, not "
         f"{space}; use nas_rl.reward=train"),
        (n.reward != "benchmark" or bool(cfg.benchmark.path),
         "nas_rl.reward=benchmark needs benchmark.path=<NAS-Bench-201 table or NATS directory> (README: benchmark "
         "file)"),
        (n.child_channels is None or (n.child_channels >= 0 if space == "nasrl_conv" else
                                      n.child_channels > 0 and n.child_channels % 2 == 0),
         f"nas_rl.child_channels={n.child_channels}; allowed null (search_space.channels) or a positive even number "
         "(nasrl_conv: the stem width, >= 0)"),
        (n.child_layers is None or (n.child_layers == cfg.search_space.num_layers if space == "nasrl_conv" else
                                    n.child_layers >= 3 and (space != "nb201" or n.child_layers % 3 == 0)),
         f"nas_rl.child_layers={n.child_layers}; allowed null (search_space.num_layers) or >= 3 (nb201: a multiple "
         "of 3; nasrl_conv: the architecture's depth, search_space.num_layers)"),
        *_depth_schedule_checks(cfg),
    ]


def _depth_schedule_checks(cfg: Config) -> list[tuple[bool, str]]:
    """nas_rl.depth_start: Zoph & Le's growing depth, nasrl_conv only, up to search_space.num_layers."""
    n, s = cfg.nas_rl, cfg.search_space
    if n.depth_start is None:
        return []
    return [
        (s.name == "nasrl_conv", f"nas_rl.depth_start={n.depth_start} grows the depth of nasrl_conv children only, "
                                 f"not of search_space={s.name}; use search_space=nasrl_conv or depth_start=null"),
        (1 <= n.depth_start <= s.num_layers,
         f"nas_rl.depth_start={n.depth_start}; allowed null (no schedule) or 1 .. search_space.num_layers="
         f"{s.num_layers} (the most layers a child grows to)"),
        (n.depth_step >= 1, f"nas_rl.depth_step={n.depth_step}; must be >= 1 (layers added per step)"),
        (n.depth_every_children >= 1, f"nas_rl.depth_every_children={n.depth_every_children}; must be >= 1 "
                                      "(children sampled per step)"),
        (n.child_layers is None, f"nas_rl.child_layers={n.child_layers} with nas_rl.depth_start={n.depth_start}: "
                                 "the schedule sets the depth; use child_layers=null"),
    ]
