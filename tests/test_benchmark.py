"""NAS-Bench-201 lookups (enas/benchmark.py) against a fake benchmark written here: the NATS-Bench directory and
single-file formats give the 200-epoch seed mean from the right dataset and split, the CSV and JSON tables give
their numbers, exports round-trip, and every bad path, row or arch is reported by name."""
from __future__ import annotations

import collections
import json
import sys

import pytest

from enas.benchmark import (
    BENCHMARK_KEYS,
    BenchmarkError,
    export_table,
    main,
    open_benchmark,
)
from enas.spaces.nb201_arch import ALL_CONV3, ALL_SKIP, BEST_CIFAR10, INDEX_1, Nb201Arch

# the seed means at 200 epochs, per key; binary-exact values so that means compare exactly
EXPECTED = {
    INDEX_1: {"cifar10_valid": 84.25, "cifar10_test": 88.5, "cifar100_test": 62.75, "imagenet16_test": 36.5},
    ALL_SKIP: {"cifar10_valid": 49.5, "cifar10_test": 54.25, "cifar100_test": 15.75, "imagenet16_test": 9.5},
}
SEEDS = (777, 888)  # the benchmark's seeds; the fake gives each a different accuracy, 1.0 either side of the mean
HP_12_OFFSET = -20.0  # the 12-epoch numbers, the library's default and a trap


def split_accuracies(accuracies: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per NATS dataset, the eval split -> accuracy; the splits a wrong query would read are set apart."""
    c10_valid, c10_test = accuracies["cifar10_valid"], accuracies["cifar10_test"]
    splits = {"cifar10-valid": {"x-valid": c10_valid, "ori-test": c10_valid - 4.0},  # test after 25k training
              "cifar10": {"ori-test": c10_test}}
    for dataset, key in (("cifar100", "cifar100_test"), ("ImageNet16-120", "imagenet16_test")):
        splits[dataset] = {"x-valid": accuracies[key] - 3.0, "x-test": accuracies[key],
                           "ori-test": accuracies[key] - 1.5}
    return splits


def arch_results(index: int, arch: str, hp: str) -> dict:
    """An ArchResults state as NATS-Bench stores it, built with the library's own classes."""
    from nats_bench import ArchResults, ResultsCount  # an optional extra

    epochs = int(hp)
    last = epochs - 1
    results = ArchResults(index, arch)
    for dataset, splits in split_accuracies(EXPECTED[arch]).items():
        for seed, delta in zip(SEEDS, (-1.0, 1.0)):
            config = {"name": "infer.tiny", "channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10}
            count = ResultsCount(dataset, None, {last: 99.0}, {last: 0.05}, 1.0, 100.0, config, seed, epochs, [0.01])
            for split, accuracy in splits.items():
                shift = delta + (HP_12_OFFSET if hp == "12" else 0.0)
                count.update_OLD_eval(split, {last: accuracy + shift}, {last: 0.5})
            results.update(dataset, seed, count)
    return results.state_dict()


def per_arch(index: int, arch: str) -> dict:
    return collections.OrderedDict((hp, arch_results(index, arch, hp)) for hp in ("12", "200"))


@pytest.fixture
def nats_dir(tmp_path):
    """The NATS-tss-v1_0-3ffb9-simple layout: meta.pickle.pbz2 + 000000.pickle.pbz2 ... (pickle_save adds .pbz2)."""
    nats_bench = pytest.importorskip("nats_bench")
    root = tmp_path / "NATS-tss-fake-simple"
    root.mkdir()
    archs = list(EXPECTED)
    nats_bench.pickle_save({"meta_archs": archs, "total_archs": len(archs), "arch2infos": None,
                            "evaluated_indexes": list(range(len(archs)))}, root / "meta.pickle")
    for index, arch in enumerate(archs):
        nats_bench.pickle_save(per_arch(index, arch), root / f"{index:06d}.pickle")
    return root


@pytest.fixture
def nats_file(tmp_path):
    """The single-file form, NATS-tss-v1_0-3ffb9.pickle.pbz2, read with fast_mode=False."""
    nats_bench = pytest.importorskip("nats_bench")
    archs = list(EXPECTED)
    nats_bench.pickle_save({"meta_archs": archs, "total_archs": len(archs),
                            "arch2infos": {i: per_arch(i, arch) for i, arch in enumerate(archs)},
                            "evaluated_indexes": list(range(len(archs)))}, tmp_path / "NATS-tss-fake.pickle")
    return tmp_path / "NATS-tss-fake.pickle.pbz2"


def write_csv(path, header: str, *rows: str):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def csv_table(tmp_path, keys=BENCHMARK_KEYS):
    rows = [",".join([arch, *(str(acc[key]) for key in keys)]) for arch, acc in EXPECTED.items()]
    return write_csv(tmp_path / "nb201.csv", ",".join(["arch", *keys]), *rows)


def assert_benchmark_error(build, *fragments: str) -> None:
    with pytest.raises(BenchmarkError) as info:
        build()
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} missing from {str(info.value)!r}"


# --- NATS-Bench formats ---

def test_nats_directory_gives_200_epoch_seed_means_of_the_paper_splits(nats_dir):
    bench = open_benchmark(nats_dir)
    assert len(bench) == 2 and bench.arch_strings() == list(EXPECTED)
    for arch, expected in EXPECTED.items():
        assert bench.accuracies(arch) == pytest.approx(expected, abs=1e-9)
        assert bench.accuracies(Nb201Arch.from_bench_string(arch)) == bench.accuracies(arch)


def test_nats_single_file_gives_the_same_numbers(nats_file):
    bench = open_benchmark(nats_file)
    for arch, expected in EXPECTED.items():
        assert bench.accuracies(Nb201Arch.from_bench_string(arch)) == pytest.approx(expected, abs=1e-9)


def test_nats_lookups_are_cached(nats_dir):
    bench = open_benchmark(nats_dir)
    first = bench.accuracies(INDEX_1)
    (nats_dir / "000000.pickle.pbz2").unlink()  # a second read from disk would now fail
    assert bench.accuracies(INDEX_1) == first


def test_nats_arch_missing_from_the_benchmark_is_named(nats_dir):
    bench = open_benchmark(nats_dir)
    assert_benchmark_error(lambda: bench.accuracies(BEST_CIFAR10), BEST_CIFAR10, "is not in the benchmark")
    (nats_dir / "000001.pickle.pbz2").unlink()
    assert_benchmark_error(lambda: bench.accuracies(ALL_SKIP), ALL_SKIP, "index 1")


def test_nats_directory_without_meta_file_is_rejected(tmp_path):
    assert_benchmark_error(lambda: open_benchmark(tmp_path), str(tmp_path), "meta.pickle.pbz2")


def test_nats_format_without_nats_bench_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import now raises ImportError
    path = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    path.write_bytes(b"")
    assert_benchmark_error(lambda: open_benchmark(path), str(path), 'pip install -e ".[bench]"')


def test_export_table_round_trips_through_csv(nats_dir, tmp_path, caplog):
    out = tmp_path / "out" / "nb201.csv"
    with caplog.at_level("INFO", logger="enas.benchmark"):
        assert export_table(nats_dir, out) == 2
    assert "exported 2 / 2 archs" in caplog.text
    nats, table = open_benchmark(nats_dir), open_benchmark(out)
    assert table.keys == BENCHMARK_KEYS and table.arch_strings() == nats.arch_strings()
    for arch in EXPECTED:
        assert table.accuracies(arch) == nats.accuracies(arch)


def test_export_command_line(nats_dir, tmp_path):
    main(["export", str(nats_dir), str(tmp_path / "nb201.csv")])
    assert open_benchmark(tmp_path / "nb201.csv").accuracies(ALL_SKIP) == pytest.approx(EXPECTED[ALL_SKIP])
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "missing"), str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


# --- tables ---

def test_csv_table_gives_its_numbers_for_an_arch_or_its_string(tmp_path):
    bench = open_benchmark(csv_table(tmp_path))
    for arch, expected in EXPECTED.items():
        assert bench.accuracies(arch) == expected
        assert bench.accuracies(Nb201Arch.from_bench_string(arch)) == expected


def test_csv_table_may_hold_a_subset_of_keys_in_any_order(tmp_path):
    bench = open_benchmark(csv_table(tmp_path, keys=("imagenet16_test", "cifar10_test")))
    assert bench.keys == ("imagenet16_test", "cifar10_test")
    assert bench.accuracies(INDEX_1) == {"imagenet16_test": 36.5, "cifar10_test": 88.5}


def test_json_table_gives_its_numbers(tmp_path):
    path = tmp_path / "nb201.json"
    path.write_text(json.dumps(EXPECTED))
    bench = open_benchmark(path)
    assert bench.accuracies(Nb201Arch.from_bench_string(ALL_SKIP)) == EXPECTED[ALL_SKIP]
    assert bench.accuracies(INDEX_1) == EXPECTED[INDEX_1]


# --- errors ---

def test_missing_path_and_unknown_suffix_are_named(tmp_path):
    assert_benchmark_error(lambda: open_benchmark(tmp_path / "nope.csv"), "nope.csv", "does not exist")
    (tmp_path / "bench.txt").write_text("")
    assert_benchmark_error(lambda: open_benchmark(tmp_path / "bench.txt"), "bench.txt", ".pickle.pbz2", ".csv")


def test_table_arch_missing_from_the_benchmark_is_named(tmp_path):
    bench = open_benchmark(csv_table(tmp_path))
    assert_benchmark_error(lambda: bench.accuracies(ALL_CONV3), ALL_CONV3, "is not in the benchmark")


def test_malformed_csv_rows_are_reported_with_their_line(tmp_path):
    header = "arch,cifar10_test"
    cases = {"ragged": (f"{INDEX_1},88.5,1.0", "line 3", "wrong number of fields"),
             "not_a_number": (f"{INDEX_1},high", "line 3", "'high'"),
             "bad_arch": ("|conv~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|,1.0", "line 3", "'conv'"),
             "duplicate": (f"{ALL_SKIP},1.0", "line 3", "appears twice")}
    for name, (row, *fragments) in cases.items():
        path = write_csv(tmp_path / f"{name}.csv", header, f"{ALL_SKIP},54.25", row)
        assert_benchmark_error(lambda path=path: open_benchmark(path), f"{name}.csv", *fragments)


def test_csv_header_must_name_known_keys(tmp_path):
    path = write_csv(tmp_path / "h.csv", "arch,cifar10_acc", f"{ALL_SKIP},54.25")
    assert_benchmark_error(lambda: open_benchmark(path), "'cifar10_acc'", "cifar10_valid")
    path = write_csv(tmp_path / "only_arch.csv", "arch", ALL_SKIP)
    assert_benchmark_error(lambda: open_benchmark(path), "non-empty subset")


def test_json_table_with_a_bad_arch_or_keys_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({ALL_SKIP: {"cifar10_test": 54.25}, "|skip_connect~0|": {"cifar10_test": 1.0}}))
    assert_benchmark_error(lambda: open_benchmark(path), "'|skip_connect~0|'", "bad arch string")
    path.write_text(json.dumps({ALL_SKIP: {"cifar10_test": 54.25}, INDEX_1: {"cifar100_test": 1.0}}))
    assert_benchmark_error(lambda: open_benchmark(path), INDEX_1, "cifar100_test")


def test_lookup_of_a_bad_string_or_a_non_nb201_arch_is_rejected(tmp_path):
    bench = open_benchmark(csv_table(tmp_path))
    assert_benchmark_error(lambda: bench.accuracies("|skip~0|"), "'|skip~0|'", "bad arch string")

    class MacroArch:
        def __str__(self) -> str:
            return "macro network of 12 layers"

    assert_benchmark_error(lambda: bench.accuracies(MacroArch()), "search_space=nb201", "MacroArch")
