"""Deficit round robin by item count (api/fairness.py): how the writer's rounds share
between apps."""

from __future__ import annotations

from api.fairness import DeficitRoundRobin


def test_a_second_key_is_served_in_the_first_round_whatever_queued_before_it() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(500)
    queued = [("a", 500)] * 10 + [("b", 500)]
    assert drr.pick(queued, 1000) == [0, 10]


def test_turns_and_credit_carry_over_rounds() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(500)
    # a: 400 (100 credit left, its next does not fit), b: 300, a again: the round is full
    first = [("a", 400), ("a", 400), ("b", 300), ("a", 400)]
    assert drr.pick(first, 1000) == [0, 2]
    # a's turn goes on with its 600 credit: 400; b's 600 is over its 500 credit: it waits for
    # its next turn, which this round has no room for
    assert drr.pick([("a", 400), ("a", 400), ("b", 600)], 1000) == [0, 1]
    assert drr.pick([("b", 600)], 1000) == [0]


def test_by_item_count_small_requests_are_not_starved_by_big_ones() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(500)
    queued = [("a", 500)] * 4 + [("b", 1)] * 2000
    taken = drr.pick(queued, 1000)
    assert [queued[i][0] for i in taken].count("b") == 500  # b's quantum, as a's


def test_one_key_keeps_arrival_order_and_the_limit() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(500)
    queued = [("a", 2)] * 5 + [("a", 400)] * 3
    assert drr.pick(queued, 1000) == [0, 1, 2, 3, 4, 5, 6]  # 10 + 400 + 400; the next > 1000
    assert drr.pick([("a", 400)], 1000) == [0]


def test_a_request_bigger_than_a_round_still_goes_alone() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(500)
    # a saves up credit over its turns; b's small one does not wait for that
    assert drr.pick([("a", 1500), ("b", 10)], 1000) == [1]
    assert drr.pick([("a", 1500)], 1000) == [0]


def test_nothing_queued_picks_nothing() -> None:
    assert DeficitRoundRobin[str](500).pick([], 1000) == []
