"""The micro architecture as a value (enas/spaces/micro_arch.py) and its choice encoding (enas/spaces/micro.py):
the published ENAS cells, JSON and ENAS-string round trips, and one clear error per kind of malformed input."""

import json

import pytest
import torch
from conftest import assert_arch_error

from enas.spaces.micro import MicroSpace
from enas.spaces.micro_arch import (
    PUBLISHED_NORMAL,
    PUBLISHED_REDUCE,
    Cell,
    MicroArch,
    Node,
    published_arch,
)

SEP3, SEP5, AVG, MAX, ID = "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity"
PUBLISHED_STRING = f"{PUBLISHED_NORMAL} {PUBLISHED_REDUCE}"
SEEDS = range(8)


def random_arch(seed: int, num_nodes: int = 5) -> MicroArch:
    return MicroSpace(num_nodes=num_nodes).sample_uniform(torch.Generator().manual_seed(seed))


def published_json() -> dict:
    return published_arch().to_json()


# ---------------------------------------------------------------------------------- the published cells


def test_published_normal_cell_has_the_reference_nodes():
    # enas_reference.md §5: nodes 2..6 = (in0 avg, in0 sep3), (in0 id, in0 sep5), (in0 id, in1 sep5),
    # (in1 sep3, in0 sep5), (in0 avg, in1 sep5)
    assert published_arch().normal.nodes == (
        Node(0, AVG, 0, SEP3), Node(0, ID, 0, SEP5), Node(0, ID, 1, SEP5), Node(1, SEP3, 0, SEP5),
        Node(0, AVG, 1, SEP5))


def test_published_reduce_cell_has_the_reference_nodes():
    # `1 0 1 0  0 3 0 2  1 1 3 1  1 0 0 4  0 3 1 1`
    assert published_arch().reduce.nodes == (
        Node(1, SEP3, 1, SEP3), Node(0, MAX, 0, AVG), Node(1, SEP5, 3, SEP5), Node(1, SEP3, 0, ID),
        Node(0, MAX, 1, SEP5))


def test_published_cells_have_the_reference_loose_ends():
    arch = published_arch()
    assert arch.normal.loose_ends() == (2, 3, 4, 5, 6)
    assert arch.reduce.loose_ends() == (2, 4, 5, 6)


def test_published_arch_encodes_back_to_the_script_string():
    assert published_arch().to_enas_string() == PUBLISHED_STRING
    assert published_arch().num_nodes == 5


def test_str_shows_a_table_per_cell_and_the_enas_string():
    text = str(published_arch())
    assert "normal cell" in text and "reduce cell" in text
    assert "concat of nodes 2, 3, 4, 5, 6" in text and "concat of nodes 2, 4, 5, 6" in text
    assert f"ENAS string: {PUBLISHED_STRING}" in text
    rows = [line.split("|") for line in text.splitlines() if line.strip().startswith("2 |")]
    assert [[c.strip() for c in row] for row in rows] == [["2", "0", AVG, "0", SEP3], ["2", "1", SEP3, "1", SEP3]]


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("seed", [None, *SEEDS])
def test_json_round_trip_gives_the_same_arch(seed):
    arch = published_arch() if seed is None else random_arch(seed)
    assert MicroArch.from_json(arch.to_json()) == arch
    assert MicroArch.from_json(json.loads(json.dumps(arch.to_json()))) == arch


@pytest.mark.parametrize("seed", [None, *SEEDS])
def test_save_then_load_gives_the_same_arch(seed, tmp_path):
    arch = published_arch() if seed is None else random_arch(seed)
    path = tmp_path / "sub" / "arch.json"
    arch.save(path)
    assert MicroArch.load(path) == arch
    assert [p.name for p in path.parent.iterdir()] == ["arch.json"]  # no temp file left behind


@pytest.mark.parametrize("seed", SEEDS)
def test_enas_string_round_trip_gives_the_same_arch(seed):
    arch = random_arch(seed)
    assert MicroArch.from_enas_string(arch.to_enas_string()) == arch
    assert MicroArch.from_enas_string(arch.to_enas_string(), num_nodes=5) == arch


def test_enas_string_round_trip_works_for_other_node_counts():
    arch = random_arch(0, num_nodes=3)
    assert arch.num_nodes == 3 and len(arch.to_enas_string().split()) == 24
    assert MicroArch.from_enas_string(arch.to_enas_string()) == arch


def test_arch_is_frozen_and_hashable():
    arch = published_arch()
    with pytest.raises(AttributeError):
        arch.normal = arch.reduce
    assert len({arch, published_arch()}) == 1


# ---------------------------------------------------------------------------------- malformed inputs


def replace_ints(text: str, **positions: int) -> str:
    """The ENAS string with integer `p<i>` replaced."""
    ints = text.split()
    for key, value in positions.items():
        ints[int(key[1:])] = str(value)
    return " ".join(ints)


def test_input_index_beyond_the_node_is_rejected_naming_cell_node_and_range():
    # node 2 may only read nodes 0 and 1; its input_2 (position 2 of the normal cell) = 2 is itself
    assert_arch_error(lambda: MicroArch.from_enas_string(replace_ints(PUBLISHED_STRING, p2=2)),
                      "normal cell", "node 2", "input_b = 2", "allowed 0..1")
    # reduce cell, node 4 (third node, first int = position 20 + 8): may read 0..3
    assert_arch_error(lambda: MicroArch.from_enas_string(replace_ints(PUBLISHED_STRING, p28=4)),
                      "reduce cell", "node 4", "input_a = 4", "allowed 0..3")


def test_negative_input_index_is_rejected():
    assert_arch_error(lambda: MicroArch.from_enas_string(replace_ints(PUBLISHED_STRING, p4=-1)),
                      "normal cell", "node 3", "allowed 0..2")


def test_unknown_op_id_in_enas_string_is_rejected_listing_the_op_ids():
    assert_arch_error(lambda: MicroArch.from_enas_string(replace_ints(PUBLISHED_STRING, p23=5)),
                      "reduce cell", "node 2", "op_2 = 5", "allowed 0..4", "0=sep_conv_3x3", "4=identity")


def test_enas_string_of_wrong_length_is_rejected():
    short = " ".join(PUBLISHED_STRING.split()[:-1])
    assert_arch_error(lambda: MicroArch.from_enas_string(short), "8 per node", "got 39")
    assert_arch_error(lambda: MicroArch.from_enas_string(PUBLISHED_STRING, num_nodes=4), "32 integers", "got 40")
    assert_arch_error(lambda: MicroArch.from_enas_string(""), "got 0")


def test_enas_string_with_non_integers_is_rejected():
    assert_arch_error(lambda: MicroArch.from_enas_string(PUBLISHED_STRING.replace("4", "x", 1)), "integers")


def test_unknown_op_name_in_json_is_rejected_naming_cell_node_and_the_allowed_ops():
    data = published_json()
    data["reduce"][1]["ops"][0] = "conv_7x7"
    del data["enas_string"]
    assert_arch_error(lambda: MicroArch.from_json(data), "reduce cell", "node 3", "'conv_7x7'",
                      "allowed sep_conv_3x3, sep_conv_5x5, avg_pool_3x3, max_pool_3x3, identity")


def test_out_of_range_input_in_json_is_rejected_naming_cell_and_node():
    data = published_json()
    data["normal"][0]["inputs"] = [0, 2]
    del data["enas_string"]
    assert_arch_error(lambda: MicroArch.from_json(data), "normal cell", "node 2", "allowed 0..1")


def test_malformed_node_in_json_is_rejected_showing_the_expected_shape():
    data = published_json()
    data["normal"][3] = {"inputs": [0], "ops": [SEP3, SEP3]}
    assert_arch_error(lambda: MicroArch.from_json(data), "normal cell", "node 5", "'inputs': [a, b]")


def test_wrong_number_of_nodes_in_json_is_rejected():
    data = published_json()
    data["normal"] = data["normal"][:4]
    assert_arch_error(lambda: MicroArch.from_json(data), "normal cell", "4 nodes", "num_nodes is 5")
    del data["num_nodes"], data["enas_string"]  # without num_nodes, the two cells must still agree
    assert_arch_error(lambda: MicroArch.from_json(data), "normal cell has 4 nodes", "reduce cell has 5")


@pytest.mark.parametrize("key, value", [("format", "darts-genotype"), ("version", 2), ("format", None)])
def test_unknown_format_or_version_is_rejected_naming_the_expected_one(key, value):
    data = published_json()
    data[key] = value
    assert_arch_error(lambda: MicroArch.from_json(data), f"{key}={value!r}", "format='enas-arch'", "version=1")


def test_arch_of_another_space_is_rejected():
    data = published_json()
    data["space"] = "macro"
    assert_arch_error(lambda: MicroArch.from_json(data), "'macro'", "'micro'")


def test_enas_string_inconsistent_with_the_cells_is_rejected():
    data = published_json()
    data["enas_string"] = replace_ints(PUBLISHED_STRING, p1=0)
    assert_arch_error(lambda: MicroArch.from_json(data), "does not match the cells", PUBLISHED_STRING)


@pytest.mark.parametrize("value", [None, 42, ["0", "2"]])
def test_enas_string_that_is_not_a_string_is_rejected_with_arch_error(value):
    # a hand-edited file may hold `"enas_string": null`; the loader must still answer with one clear ArchError
    data = published_json()
    data["enas_string"] = value
    assert_arch_error(lambda: MicroArch.from_json(data), "enas_string")


def test_non_object_json_is_rejected():
    assert_arch_error(lambda: MicroArch.from_json([1, 2, 3]), "JSON object", "list")


def test_loading_a_missing_file_raises_arch_error_with_the_path(tmp_path):
    path = tmp_path / "nope.json"
    assert_arch_error(lambda: MicroArch.load(path), str(path), "does not exist")


def test_loading_a_file_that_is_not_json_raises_arch_error_with_the_path(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text("0 2 0 0 {")
    assert_arch_error(lambda: MicroArch.load(path), str(path), "not valid JSON")


def test_cells_with_different_node_counts_are_rejected():
    one, two = Cell((Node(0, ID, 1, ID),)), Cell((Node(0, ID, 1, ID), Node(2, ID, 0, ID)))
    assert_arch_error(lambda: MicroArch(one, two), "normal cell has 1 nodes", "reduce cell has 2")


# ---------------------------------------------------------------------------- choices <-> architecture


def test_choices_follow_the_sampling_order_idx_idx_op_op():
    # the ENAS string stores idx1 op1 idx2 op2; a rollout samples idx1 idx2 op1 op2 (enas_reference.md §3.2)
    choices = MicroSpace().to_choices(published_arch())
    assert len(choices) == 40
    assert choices[:4] == [0, 0, 2, 0]      # normal node 2: (in0 avg, in0 sep3)
    assert choices[20:24] == [1, 1, 0, 0]   # reduce node 2: (in1 sep3, in1 sep3)


@pytest.mark.parametrize("seed", SEEDS)
def test_to_choices_and_from_choices_are_inverses(seed):
    space = MicroSpace()
    arch = random_arch(seed)
    choices = space.to_choices(arch)
    assert space.from_choices(choices) == arch
    assert space.to_choices(space.from_choices(choices)) == choices


def test_from_choices_rejects_a_rollout_of_the_wrong_length():
    assert_arch_error(lambda: MicroSpace().from_choices([0] * 39), "40 choices", "got 39")


def test_to_choices_rejects_an_arch_with_another_node_count():
    assert_arch_error(lambda: MicroSpace(num_nodes=4).to_choices(published_arch()), "5 nodes", "has 4")


def test_uniform_sampling_is_reproducible_and_covers_the_space():
    space = MicroSpace()
    assert random_arch(3) == random_arch(3)
    archs = [random_arch(s) for s in range(40)]
    assert len(set(archs)) == 40
    ops = {op for a in archs for cell in (a.normal, a.reduce) for n in cell.nodes for op in (n.op_a, n.op_b)}
    assert ops == {SEP3, SEP5, AVG, MAX, ID}
    last_inputs = {n.input_a for a in archs for n in (a.normal.nodes[-1],)}
    assert last_inputs == set(range(space.num_nodes + 1))  # node 6 reads any of nodes 0..5
