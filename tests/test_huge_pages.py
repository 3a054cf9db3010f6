"""run.py relaunches itself once with glibc's huge-page tunable where the kernel gives huge pages only on request."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from enas.huge_pages import MIN_GLIBC, glibc_version, hugetlb_setting, thp_mode, tunables_with_huge_pages


@pytest.mark.parametrize("tunables, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", None),  # the user's own choice, opt-out included, stands
    ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", None),
])
def test_the_tunable_is_added_once_and_never_overrides_the_users(tunables, expected):
    assert tunables_with_huge_pages(tunables, "madvise", (2, 36)) == expected


@pytest.mark.parametrize("mode, glibc", [
    ("always", (2, 36)),   # huge pages already, no request needed
    ("never", (2, 36)),    # none to have
    (None, (2, 36)),       # no THP at all
    ("madvise", (2, 34)),  # a glibc without the tunable
    ("madvise", None),     # another C library
])
def test_no_relaunch_where_it_would_change_nothing(mode, glibc):
    assert tunables_with_huge_pages(None, mode, glibc) is None


def test_the_setting_is_read_back_from_the_tunables_string():
    assert hugetlb_setting(None) is None and hugetlb_setting("glibc.malloc.arena_max=2") is None
    assert hugetlb_setting("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1") == "1"
    assert hugetlb_setting("glibc.malloc.hugetlb=0") == "0"


def test_the_kernel_mode_is_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert thp_mode(path) == "madvise"
    path.write_text("[always] madvise never\n")
    assert thp_mode(path) == "always"
    assert thp_mode(tmp_path / "missing") is None


_RELAUNCH = """
import os, sys
print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES"), flush=True)
import enas.huge_pages as huge_pages
huge_pages.thp_mode = lambda path=None: "madvise"  # relaunch whatever this machine's mode
huge_pages.relaunch_with_huge_pages()
print("done", os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
import torch
from enas.build import keep_freed_memory
keep_freed_memory()
tensors = [torch.ones(1 << 22) for _ in range(32)]  # 512 MiB on the heap
with open("/proc/self/smaps_rollup") as f:
    print("huge_kib", next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages")))
"""


def _run(tunables: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    return subprocess.run([sys.executable, "-c", _RELAUNCH, "an-argument"], capture_output=True, text=True,
                          check=True, env=env).stdout.splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux") or (glibc_version() or (0, 0)) < MIN_GLIBC,
                    reason="the tunable needs glibc >= 2.35 on Linux")
def test_the_process_relaunches_once_in_place_with_the_tunable_and_its_arguments():
    out = _run(None)
    first, second = out[0].split(), out[1].split()
    assert first[0] == second[0] == "start" and first[1] == second[1]  # the same pid: re-executed, not a child
    assert (first[2], second[2]) == ("None", "glibc.malloc.hugetlb=1")
    assert out[2] == "done glibc.malloc.hugetlb=1 ['an-argument']"
    opted_out = _run("glibc.malloc.hugetlb=0")
    assert [line.split()[0] for line in opted_out[:2]] == ["start", "done"]  # no relaunch: the user's choice
    if thp_mode() == "madvise":  # the heap gets huge pages with the tunable and none without
        assert int(out[3].split()[1]) > 0
        assert int(opted_out[2].split()[1]) == 0
