"""NAS-Bench-201 accuracy lookups: the trained accuracy of a cell, from NATS-Bench or from a small exported table.

Reference: shared/reference/nb201.md §5 (NATS-Bench `nats_bench` 1.8, `get_more_info`). Every number is the seed
mean after 200 epochs (`hp='200', is_random=False`); the library's defaults (`hp='12'`, `is_random=True`) give
12-epoch numbers from one random seed. Accuracies are in percent, as the benchmark gives them:

    cifar10_valid    dataset `cifar10-valid` (trained on 25k), `valid-accuracy`
    cifar10_test     dataset `cifar10` (trained on 50k), `test-accuracy` (this dataset has no valid split)
    cifar100_test    dataset `cifar100`, `test-accuracy`
    imagenet16_test  dataset `ImageNet16-120`, `test-accuracy`

Sources, picked by `open_benchmark` from the path (NATS formats need the optional `nats_bench`):
  - a directory: NATS `NATS-tss-v1_0-3ffb9-simple/` (meta.pickle.pbz2 + 000000.pickle.pbz2 ...), read lazily
  - a `.pickle.pbz2` / `.pbz2` / `.pickle` file: NATS `NATS-tss-v1_0-3ffb9.pickle.pbz2`, loaded whole (~GBs)
  - a `.csv` table: header `arch,cifar10_valid,cifar10_test,cifar100_test,imagenet16_test`, `arch` being the
    benchmark string (`|nor_conv_3x3~0|+|...|`); any non-empty subset of the accuracy columns, in any order
  - a `.json` table: `{arch_string: {key: accuracy}}`, every entry with the same keys

Convert a NATS file once into the small CSV (15,625 rows, ~2 MB):

    python -m enas.benchmark export ~/.torch/NATS-tss-v1_0-3ffb9-simple nb201.csv
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

from enas.files import write_text_atomic
from enas.spaces.base import ArchError
from enas.spaces.nb201_arch import STRING_FORM, Nb201Arch

log = logging.getLogger(__name__)

BENCHMARK_KEYS = ("cifar10_valid", "cifar10_test", "cifar100_test", "imagenet16_test")
NATS_QUERIES = {"cifar10_valid": ("cifar10-valid", "valid-accuracy"), "cifar10_test": ("cifar10", "test-accuracy"),
                "cifar100_test": ("cifar100", "test-accuracy"), "imagenet16_test": ("ImageNet16-120", "test-accuracy")}
NATS_SUFFIXES = (".pickle.pbz2", ".pbz2", ".pickle")
TABLE_SUFFIXES = (".csv", ".json")
EXPORT_LOG_EVERY = 1000  # archs between progress lines


class BenchmarkError(ValueError):
    """A benchmark file or lookup that cannot be served; the message names the bad value and what is allowed."""


class Nb201Benchmark:
    """Accuracies of NAS-Bench-201 cells from one source, cached per cell."""

    def __init__(self, path: Path, keys: tuple[str, ...], arch_strings: list[str],
                 lookup: Callable[[str], dict[str, float] | None]) -> None:
        self.path, self.keys, self._arch_strings, self._lookup = path, keys, arch_strings, lookup
        self._cache: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._arch_strings)

    def arch_strings(self) -> list[str]:
        """The benchmark strings of every cell it holds (NATS: in the benchmark's index order)."""
        return list(self._arch_strings)

    def accuracies(self, arch: Nb201Arch | str) -> dict[str, float]:
        """{key: accuracy in %} over `self.keys` for an Nb201Arch or its benchmark string."""
        text = _bench_string(arch)
        if text not in self._cache:
            found = self._lookup(text)
            if found is None:
                raise BenchmarkError(f"arch {text!r} is not in the benchmark {str(self.path)!r} ({len(self)} archs)")
            self._cache[text] = found
        return dict(self._cache[text])


def _bench_string(arch) -> str:
    if isinstance(arch, str):
        try:
            return Nb201Arch.from_bench_string(arch).to_bench_string()
        except ArchError as e:
            raise BenchmarkError(f"bad arch string {arch!r}: {e}") from None
    if not hasattr(arch, "to_bench_string"):
        raise BenchmarkError(f"benchmark lookups exist only for search_space=nb201; got a {type(arch).__name__} "
                             f"({arch!s:.80})")
    return arch.to_bench_string()


def open_benchmark(path: str | Path) -> Nb201Benchmark:
    """The benchmark at `path`, read as the format its name says (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BenchmarkError(f"benchmark path {str(path)!r} does not exist")
    if path.is_dir():
        if not (path / "meta.pickle.pbz2").is_file():
            raise BenchmarkError(f"benchmark directory {str(path)!r} has no meta.pickle.pbz2; expected the NATS "
                                 f"layout NATS-tss-v1_0-3ffb9-simple/ (meta.pickle.pbz2 + 000000.pickle.pbz2 ...)")
        return _open_nats(path, fast_mode=True)
    if path.name.endswith(NATS_SUFFIXES):
        return _open_nats(path, fast_mode=False)
    if path.suffix == ".csv":
        return _table(path, *_read_csv(path))
    if path.suffix == ".json":
        return _table(path, *_read_json(path))
    raise BenchmarkError(f"benchmark file {str(path)!r} has an unknown format; allowed a NATS directory or "
                         f"{', '.join(NATS_SUFFIXES + TABLE_SUFFIXES)}")


def _open_nats(path: Path, fast_mode: bool) -> Nb201Benchmark:
    try:
        import nats_bench  # an optional extra, imported only when a NATS file is opened
    except ImportError:
        raise BenchmarkError(f"reading the NATS-Bench file {str(path)!r} needs nats_bench: "
                             f'pip install -e ".[bench]"') from None
    try:
        api = nats_bench.create(str(path), "tss", fast_mode=fast_mode, verbose=False)
    except (OSError, EOFError, ValueError, KeyError) as e:
        raise BenchmarkError(f"could not read NATS-Bench (topology) {str(path)!r}: {e}") from e

    def lookup(text: str) -> dict[str, float] | None:
        index = api.query_index_by_arch(text)
        if index < 0:
            return None
        try:
            found = {key: float(api.get_more_info(index, dataset, hp="200", is_random=False)[metric])
                     for key, (dataset, metric) in NATS_QUERIES.items()}
        except (AssertionError, KeyError, ValueError) as e:  # a missing or partial per-arch file
            raise BenchmarkError(f"benchmark {str(path)!r} has no 200-epoch results for arch {text!r} "
                                 f"(index {index}): {e!r}") from e
        if api.fast_mode:  # our cache keeps 4 floats; the api's would keep every epoch of every seed (GBs)
            api.arch2infos_dict.pop(index, None)
        return found

    return Nb201Benchmark(path, BENCHMARK_KEYS, list(api.meta_archs), lookup)


def _table(path: Path, keys: tuple[str, ...], rows: dict[str, dict[str, float]]) -> Nb201Benchmark:
    return Nb201Benchmark(path, keys, list(rows), rows.get)


def _check_keys(where: str, keys) -> tuple[str, ...]:
    unknown = [k for k in keys if k not in BENCHMARK_KEYS]
    if unknown or not keys:
        raise BenchmarkError(f"{where}: accuracy keys {list(keys)!r} must be a non-empty subset of "
                             f"{', '.join(BENCHMARK_KEYS)}" + (f"; unknown {unknown!r}" if unknown else ""))
    return tuple(keys)


def _add_row(rows: dict, where: str, text, values: dict, keys: tuple[str, ...]) -> None:
    try:
        arch = Nb201Arch.from_bench_string(text).to_bench_string()
    except ArchError as e:
        raise BenchmarkError(f"{where}: bad arch string {text!r} (form {STRING_FORM}): {e}") from None
    if arch in rows:
        raise BenchmarkError(f"{where}: arch {arch!r} appears twice")
    try:
        rows[arch] = {key: float(values[key]) for key in keys}
    except (KeyError, TypeError, ValueError):
        raise BenchmarkError(f"{where}: accuracies {values!r} must give a number for each of {', '.join(keys)}"
                             ) from None


def _read_csv(path: Path) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if not header or header[0] != "arch":
            raise BenchmarkError(f"benchmark table {str(path)!r}: header {header!r} must start with 'arch', then "
                                 f"some of {', '.join(BENCHMARK_KEYS)}")
        keys = _check_keys(f"benchmark table {str(path)!r} header", header[1:])
        rows: dict[str, dict[str, float]] = {}
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or None in row.values():
                raise BenchmarkError(f"{where}: row has the wrong number of fields; header is {','.join(header)}")
            _add_row(rows, where, row["arch"], row, keys)
    return keys, rows


def _read_json(path: Path) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"benchmark table {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise BenchmarkError(f"benchmark table {str(path)!r} must hold a non-empty object "
                             f"{{arch_string: {{key: accuracy}}}}")
    keys = _check_keys(f"benchmark table {str(path)!r}", tuple(next(iter(data.values()))))
    rows: dict[str, dict[str, float]] = {}
    for text, values in data.items():
        if set(values) != set(keys):
            raise BenchmarkError(f"{path} key {text!r}: has accuracies for {sorted(values)}; the first entry "
                                 f"has {sorted(keys)} and all must match")
        _add_row(rows, f"{path} key {text!r}", text, values, keys)
    return keys, rows


def export_table(benchmark_path: str | Path, out_csv: str | Path) -> int:
    """Write every cell of the benchmark at `benchmark_path` into the CSV table `out_csv`; the number of rows."""
    bench = open_benchmark(benchmark_path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("arch", *bench.keys))
    for i, text in enumerate(bench.arch_strings(), start=1):
        accuracies = bench.accuracies(text)
        writer.writerow((text, *(accuracies[key] for key in bench.keys)))
        if i % EXPORT_LOG_EVERY == 0 or i == len(bench):
            log.info("exported %d / %d archs", i, len(bench))
    write_text_atomic(out_csv, buffer.getvalue())
    return len(bench)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m enas.benchmark", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="convert a NATS-Bench file or directory into the small CSV table")
    export.add_argument("benchmark_path", help="NATS-tss-v1_0-3ffb9-simple/ or NATS-tss-v1_0-3ffb9.pickle.pbz2")
    export.add_argument("out_csv", help="the CSV table to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        num_rows = export_table(args.benchmark_path, args.out_csv)
    except BenchmarkError as e:
        parser.exit(2, f"error: {e}\n")
    log.info("wrote %d rows to %s", num_rows, args.out_csv)


if __name__ == "__main__":
    main()
