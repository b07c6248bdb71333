"""Holes in a partition's offsets are read again; offsets the log never had are passed after reads that agree."""

import random

import pytest

from stream.worker.offset_order import READS_TO_CONFIRM_GAP, Order, PartitionOrder


def test_records_after_a_hole_are_dropped_until_the_hole_is_read_again():
    order = PartitionOrder()
    order.expect("p", 100)
    assert order.check("p", 100) is Order.APPLY
    assert order.check("p", 104) is Order.REFETCH
    # Records fetched before the seek back are still on their way.
    assert [order.check("p", o) for o in (105, 106)] == [Order.DROP, Order.DROP]
    assert [order.check("p", o) for o in (101, 102, 103, 104, 105)] == [Order.APPLY] * 5
    assert order.holes == {}


def test_each_partition_is_checked_on_its_own_and_forgotten_when_revoked():
    order = PartitionOrder()
    order.expect("a", 0)
    order.expect("b", 50)
    assert order.check("a", 3) is Order.REFETCH
    assert order.check("b", 50) is Order.APPLY
    order.forget(["a"])
    # A partition read from an unknown point (assigned again) starts where its first record is.
    assert order.check("a", 40) is Order.APPLY
    assert order.check("b", 52) is Order.REFETCH


def test_records_read_again_below_the_expected_offset_are_applied_for_the_states_to_skip():
    order = PartitionOrder()
    order.expect("p", 10)
    assert [order.check("p", o) for o in (10, 11, 12)] == [Order.APPLY] * 3
    assert order.check("p", 10) is Order.APPLY_AGAIN
    assert order.check("p", 13) is Order.APPLY


def test_a_real_gap_needs_reads_from_it_that_agree():
    order = PartitionOrder()
    order.expect("p", 0)
    assert order.check("p", 0) is Order.APPLY
    verdicts = [order.check("p", 3)]
    for _ in range(READS_TO_CONFIRM_GAP):
        verdicts.append(order.check("p", 3))
    assert verdicts == [Order.REFETCH] * READS_TO_CONFIRM_GAP + [Order.APPLY_AFTER_GAP]
    assert (order.gaps["p"].start, order.gaps["p"].end) == (1, 3)
    assert order.check("p", 4) is Order.APPLY


def test_reads_of_a_hole_that_disagree_are_not_taken_for_a_gap():
    order = PartitionOrder()
    order.expect("p", 0)
    assert order.check("p", 0) is Order.APPLY
    # Two reads lost part of the hole again, each a different part: still a hole.
    assert [order.check("p", o) for o in (9, 9, 5)] == [Order.REFETCH] * 3
    assert order.holes["p"].reads == 1
    assert order.check("p", 1) is Order.APPLY
    assert order.gaps == {}


def test_the_hole_is_read_again_when_its_first_record_was_dropped_again():
    now = [0.0]
    order = PartitionOrder(refetch_again_s=1.0, clock=lambda: now[0])
    order.expect("p", 0)
    assert order.check("p", 5) is Order.REFETCH
    # Read again from 0, but 0 to 4 are dropped again: 5 and on are taken for records in flight...
    assert order.check("p", 6) is Order.DROP
    now[0] = 2.0
    # ...until they have had time to arrive: then the hole is read again.
    assert order.check("p", 7) is Order.REFETCH
    assert order.check("p", 0) is Order.APPLY


@pytest.mark.parametrize("seed", range(30))
def test_every_record_is_applied_in_order_however_the_consumer_drops_them(seed):
    """A consumer like Faust's: now and then (a rebalance) it drops a run of fetched records
    and goes on from where it was; records in flight still arrive after a seek back. The
    log also lacks some offsets, as after transaction markers."""
    rng = random.Random(seed)
    log = [o for o in range(900) if rng.random() > 0.03]
    now = [0.0]
    order = PartitionOrder(refetch_again_s=0.1, clock=lambda: now[0])
    order.expect("p", 0)
    position, in_flight, applied, dropping = 0, [], [], 0
    while position < len(log) or in_flight:
        if not in_flight:
            in_flight = log[position : position + rng.randint(1, 20)]
            position += len(in_flight)
        offset = in_flight.pop(0)
        now[0] += 0.001
        if dropping == 0 and rng.random() < 0.02:
            dropping = rng.randint(1, 30)
        if dropping:
            dropping -= 1
            continue
        verdict = order.check("p", offset)
        if verdict in (Order.APPLY, Order.APPLY_AGAIN, Order.APPLY_AFTER_GAP):
            applied.append(offset)
        elif verdict is Order.REFETCH:
            start = order.holes["p"].start
            position = next(i for i, o in enumerate(log) if o >= start)
            # Some of what was in flight still arrives after the seek.
            in_flight = in_flight[: rng.randint(0, len(in_flight))]
    # Every offset was applied, and the first time each was applied came in log order: a
    # model state that skips offsets at or below its last one loses nothing. (Records dropped
    # at the very end show no hole until more come; they stay uncommitted until then.)
    head = [o for o in log if o < 600]
    assert list(dict.fromkeys(applied))[: len(head)] == head
