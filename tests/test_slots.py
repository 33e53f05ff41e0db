"""The slot table (which branch each llama.cpp sequence slot holds), without a model.

``Memory`` records the KV operations the table asks for, so each test states which slots are
extended, forked, rewound or evicted, and what the KV cache is told to do.
"""

from __future__ import annotations

import pytest

from rainlocal.engine.llama.slots import SlotTable, common_prefix
from rainlocal.errors import EngineError


class Memory:
    def __init__(self, can_remove: bool = True):
        self.ops: list[tuple] = []
        self.can_remove = can_remove

    def copy(self, src, dst, n):
        self.ops.append(("copy", src, dst, n))

    def remove(self, seq_id, start):
        self.ops.append(("remove", seq_id, start))
        return self.can_remove


def test_common_prefix_counts_equal_leading_tokens():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0


def test_a_request_extending_a_cached_branch_reuses_its_slot():
    mem = Memory()
    table = SlotTable(4, mem)
    slot, keep = table.assign([1, 2, 3], set())
    slot.tokens = [1, 2, 3]
    again, keep = table.assign([1, 2, 3, 4, 5], set())
    assert again is slot and keep == 3
    assert mem.ops == []  # nothing copied or removed: the branch just grows


def test_the_same_sequence_again_keeps_all_but_its_last_token():
    table = SlotTable(4, Memory())
    slot, _ = table.assign([1, 2, 3], set())
    slot.tokens = [1, 2, 3]
    _, keep = table.assign([1, 2, 3], set())
    assert keep == 2  # the last token is decoded again to produce its logits


def test_a_diverging_request_forks_the_shared_prefix_into_a_free_slot():
    mem = Memory()
    table = SlotTable(4, mem)
    a, _ = table.assign([1, 2, 3, 4], set())
    a.tokens = [1, 2, 3, 4]
    b, keep = table.assign([1, 2, 7], set())
    assert b is not a and keep == 2
    assert b.tokens == [1, 2] and a.tokens == [1, 2, 3, 4]
    assert ("copy", a.seq_id, b.seq_id, 2) in mem.ops


def test_a_busy_source_is_forked_not_extended():
    table = SlotTable(4, Memory())
    a, _ = table.assign([1, 2], set())
    a.tokens = [1, 2]
    b, keep = table.assign([1, 2, 3], {a.seq_id})
    assert b is not a and keep == 2 and a.tokens == [1, 2]


def test_with_one_slot_a_diverging_request_rewinds_it_in_place():
    mem = Memory()
    table = SlotTable(1, mem)
    a, _ = table.assign([1, 2, 3, 4], set())
    a.tokens = [1, 2, 3, 4]
    b, keep = table.assign([1, 2, 9], set())
    assert b is a and keep == 2 and a.tokens == [1, 2]
    assert mem.ops == [("remove", a.seq_id, 2)]


def test_when_every_slot_is_busy_a_request_is_refused():
    table = SlotTable(1, Memory())
    a, _ = table.assign([1, 2], set())
    a.tokens = [1, 2]
    with pytest.raises(EngineError, match="too many concurrent branches"):
        table.assign([1, 2, 3], {a.seq_id})


def test_a_fork_takes_an_empty_slot_before_evicting_a_used_one():
    mem = Memory()
    table = SlotTable(3, mem)
    a, _ = table.assign([1, 2], set())
    a.tokens = [1, 2]
    b, _ = table.assign([5, 6], set())
    b.tokens = [5, 6]
    c, _ = table.assign([9], set())
    assert c not in (a, b) and not any(op[0] == "remove" for op in mem.ops)


def test_a_fork_with_no_empty_slot_reuses_the_least_recently_used():
    table = SlotTable(2, Memory())
    a, _ = table.assign([1, 2], set())
    a.tokens = [1, 2]
    b, _ = table.assign([5, 6], set())
    b.tokens = [5, 6]
    table.assign([1, 2, 3], set())  # a is used again: b is now the oldest
    a.tokens = [1, 2, 3]
    c, keep = table.assign([8, 9], set())
    assert c is b and keep == 0 and c.tokens == []


def test_eviction_drops_the_least_recently_used_idle_branch():
    mem = Memory()
    table = SlotTable(3, mem)
    slots = []
    for seq in ([1], [2], [3]):
        s, _ = table.assign(seq, set())
        s.tokens = list(seq)
        slots.append(s)
    assert table.evict_one({slots[0].seq_id}) is True
    assert slots[1].tokens == [] and slots[0].tokens == [1] and slots[2].tokens == [3]
    assert mem.ops[-1] == ("remove", slots[1].seq_id, 0)


def test_eviction_fails_when_every_branch_is_needed():
    table = SlotTable(2, Memory())
    s, _ = table.assign([1], set())
    s.tokens = [1]
    assert table.evict_one({s.seq_id}) is False


def test_a_model_that_cannot_truncate_is_reported():
    table = SlotTable(1, Memory(can_remove=False))
    a, _ = table.assign([1, 2, 3], set())
    a.tokens = [1, 2, 3]
    with pytest.raises(EngineError, match="cannot rewind"):
        table.assign([1, 9], set())


def test_longest_cached_and_holding_find_the_branch_with_a_prefix():
    table = SlotTable(2, Memory())
    a, _ = table.assign([1, 2, 3], set())
    a.tokens = [1, 2, 3]
    assert table.longest_cached([1, 2, 4]) == 2
    assert table.holding([1, 2]) is a
    assert table.holding([1, 3]) is None


def test_trim_cuts_branches_back_to_the_longest_kept_prefix_and_drops_the_rest():
    mem = Memory()
    table = SlotTable(4, mem)
    slots = []
    for seq in ([1, 2, 3, 4, 5], [1, 2, 9], [7, 8]):
        s, _ = table.assign(seq, set())
        s.tokens = list(seq)
        slots.append(s)
    table.trim([[1, 2], [1, 2, 3], [1, 2, 3, 4, 5, 6]])
    assert [s.tokens for s in slots] == [[1, 2, 3], [1, 2], []]


# ---- scratch spans (cells decoded part way up the model must not outlive the span) ----------------


def decoded(table: SlotTable, seq: list[int]):
    """Assign ``seq`` a slot and fill it, as the engine does after the decode: (slot, kept tokens)."""
    slot, keep = table.assign(seq, set())
    slot.tokens = list(seq)
    return slot, keep


def test_a_branch_extended_in_a_scratch_span_is_cut_back_to_what_it_held_before():
    mem = Memory()
    table = SlotTable(4, mem)
    a, _ = decoded(table, [1, 2, 3])
    table.begin_scratch()
    again, keep = decoded(table, [1, 2, 3, 4, 5])
    table.end_scratch()
    assert again is a and a.tokens == [1, 2, 3]
    assert mem.ops[-1] == ("remove", a.seq_id, 3)


def test_a_fork_made_in_a_scratch_span_keeps_nothing_though_its_source_keeps_its_own_cells():
    table = SlotTable(4, Memory())
    a, _ = decoded(table, [1, 2, 3, 4])
    table.begin_scratch()
    b, keep = decoded(table, [1, 2, 7, 8])
    table.end_scratch()
    assert keep == 2 and b.tokens == [] and a.tokens == [1, 2, 3, 4]


def test_a_rewind_inside_a_scratch_span_lowers_what_survives_it():
    table = SlotTable(1, Memory())  # one slot: a diverging request rewinds it in place
    a, _ = decoded(table, [1, 2, 3, 4])
    table.begin_scratch()
    s, _ = decoded(table, [1, 2, 3, 4, 5])  # extended: marked with its 4 own cells
    s, keep = decoded(table, [1, 9])  # rewound to 1: cells 1.. are rewritten in the span
    table.end_scratch()
    assert keep == 1 and a.tokens == [1]


def test_slots_a_scratch_span_never_wrote_are_left_alone():
    mem = Memory()
    table = SlotTable(4, mem)
    a, _ = decoded(table, [1, 2, 3])
    table.begin_scratch()
    b, _ = decoded(table, [8, 9])
    table.end_scratch()
    assert a.tokens == [1, 2, 3] and b.tokens == []
    table.begin_scratch()  # a span that is over marks nothing after it ends
    table.end_scratch()
    c, _ = decoded(table, [5, 6])
    assert c.tokens == [5, 6]
