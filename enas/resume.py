"""`python run.py resume=<run dir> [overrides]`: continue an interrupted run in its own directory.

Hydra has no resume of its own, so the command line is rewritten before Hydra reads it: the run's recorded
overrides (`<run dir>/.hydra/overrides.yaml`), then the overrides given now (they win over recorded ones of the same
key, e.g. `trainer.epochs=300` to extend a search), then `hydra.run.dir=<run dir> resume=true`. The run then loads
`<run dir>/last.pt` as any run does that finds one in its directory. `resume=true|false` pass through unchanged.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from enas.checkpoint import CHECKPOINT_NAME

OVERRIDES = Path(".hydra") / "overrides.yaml"


class ResumeError(ValueError):
    pass


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_path(value: str) -> bool:
    return value.lower() not in ("true", "false", "null")


def expand_resume(argv: list[str]) -> list[str]:
    """`argv` (program name first) with `resume=<run dir>` replaced by that run's overrides and directory."""
    resume = [a for a in argv[1:] if _key(a) == "resume" and "=" in a and _is_path(a.split("=", 1)[1])]
    if not resume:
        return argv
    if len(resume) > 1:
        raise ResumeError(f"resume= given {len(resume)} times ({', '.join(resume)}); name one run directory")
    if any(a in ("-m", "--multirun") for a in argv):
        raise ResumeError("resume=<run dir> continues one run; to continue a sweep's job, resume its job directory "
                          "(multirun/<date>/<time>/<job number>) without -m")
    run_dir = Path(resume[0].split("=", 1)[1]).expanduser()
    if not run_dir.is_dir():
        raise ResumeError(f"resume={str(run_dir)!r}: no such directory; give a run directory such as "
                          "outputs/<date>/<time> (the one holding last.pt and .hydra/)")
    recorded_file = run_dir / OVERRIDES
    if not recorded_file.is_file():
        raise ResumeError(f"resume={str(run_dir)!r} is not a run directory: {OVERRIDES} is missing (every run.py "
                          "run writes it)")
    recorded = yaml.safe_load(recorded_file.read_text()) or []
    given = [a for a in argv[1:] if a != resume[0]]
    given_keys = {_key(a) for a in given if "=" in a}
    kept = [o for o in recorded if _key(o) not in given_keys | {"resume", "hydra.run.dir"}]
    if not (run_dir / CHECKPOINT_NAME).is_file():
        print(f"resume: {run_dir} has no {CHECKPOINT_NAME} yet; the run starts over in that directory")
    return [argv[0], *kept, *given, f"hydra.run.dir={run_dir}", "resume=true"]
