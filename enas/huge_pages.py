"""Transparent huge pages for the heap of a CPU run, where the kernel gives them only on request.

A CPU training step streams a few GiB of activations through 4 KiB pages: on a VM every TLB miss walks two page
tables. Where the kernel's THP mode is `madvise` (a common default), glibc ≥ 2.35 asks for huge pages for the memory
malloc takes from the OS once its tunable `glibc.malloc.hugetlb=1` is set. glibc reads tunables only when a process
starts, so `run.py` re-executes itself once with it set (same pid, same arguments) before anything else happens.
Measured on a 2-core Intel Xeon VM, `experiment=bench_nni`, four alternating pairs of runs: shared step 376-399 against
390-406 ms, the search epoch 38.8-39.3 against 39.5-40.9 s (BENCHMARKS.md). Nothing changes where the mode is
`always` or `never`, on other C libraries, or where GLIBC_TUNABLES already names the tunable (set
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` to opt out).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
MIN_GLIBC = (2, 35)  # the first glibc with the tunable
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE_FILE) -> str | None:
    """The kernel's THP mode, the bracketed word of `always [madvise] never`; None where the file is missing."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the running glibc; None for another C library or OS."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), unknown name (macOS, musl)
        return None


def tunables_with_huge_pages(tunables: str | None, mode: str | None,
                             glibc: tuple[int, int] | None) -> str | None:
    """The GLIBC_TUNABLES value to relaunch with, or None where a relaunch would change nothing: THP not in `madvise`
    mode, no glibc with the tunable, or the tunable already set (to any value, so a user's choice stands)."""
    if mode != "madvise" or glibc is None or glibc < MIN_GLIBC or hugetlb_setting(tunables) is not None:
        return None
    return f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"


def hugetlb_setting(tunables: str | None) -> str | None:
    """The value GLIBC_TUNABLES gives `glibc.malloc.hugetlb` ("1": THP on request), None where it names none."""
    values = [item.partition("=")[2] for item in (tunables or "").split(":") if item.partition("=")[0] == TUNABLE]
    return values[-1] if values else None


def relaunch_with_huge_pages() -> None:
    """Re-execute this Python process with `glibc.malloc.hugetlb=1` where that gives huge pages; otherwise return.
    Call it first thing in a script's main block: the relaunched process takes the same path and returns here."""
    previous = os.environ.get("GLIBC_TUNABLES")
    value = tunables_with_huge_pages(previous, thp_mode(), glibc_version())
    if value is None:
        return
    os.environ["GLIBC_TUNABLES"] = value
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # orig_argv keeps flags such as -u and -X
    except OSError:  # a speed-up only: the run goes on in this process, as it would have without
        if previous is None:
            del os.environ["GLIBC_TUNABLES"]
        else:
            os.environ["GLIBC_TUNABLES"] = previous
