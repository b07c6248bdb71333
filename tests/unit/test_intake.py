"""The intake the worker's consumer fills with input records, and the takes the ingest task makes of it."""

from __future__ import annotations

import asyncio
import time

from stream.worker.intake import HIGH_WATER_RECORD_TAKES, HIGH_WATER_TAKES, Intake


def test_a_take_stops_at_the_record_or_byte_limit_and_a_big_record_goes_alone():
    async def run():
        intake = Intake(max_records=3, max_bytes=100, wait_s=0.0)
        for n, size in enumerate([10, 10, 10, 10, 60, 50, 500, 1]):
            intake.put(n, size)
        return [await intake.take() for _ in range(5)], len(intake)

    takes, left = asyncio.run(run())
    # 3 records; then 10 + 60 (a third, of 50, would pass 100 bytes); 50; 500 alone; the last.
    assert takes == [[0, 1, 2], [3, 4], [5], [6], [7]]
    assert left == 0


def test_a_take_waits_for_the_first_record_then_up_to_wait_s_for_more():
    async def run():
        intake = Intake(max_records=10, max_bytes=10_000, wait_s=0.2)
        taking = asyncio.ensure_future(intake.take())
        await asyncio.sleep(0.05)
        assert not taking.done()  # nothing yet: it waits
        started = time.monotonic()
        intake.put("a", 1)
        await asyncio.sleep(0.05)
        intake.put("b", 1)
        taken = await taking
        return taken, time.monotonic() - started

    taken, waited = asyncio.run(run())
    assert taken == ["a", "b"]
    assert 0.15 <= waited < 1.0


def test_a_full_take_goes_without_waiting():
    async def run():
        intake = Intake(max_records=2, max_bytes=10_000, wait_s=10.0)
        taking = asyncio.ensure_future(intake.take())
        await asyncio.sleep(0)
        intake.put("a", 1)
        intake.put("b", 1)
        intake.put("c", 1)
        return await asyncio.wait_for(taking, 1.0), len(intake)

    assert asyncio.run(run()) == (["a", "b"], 1)


def test_the_intake_says_full_at_two_takes_of_records_or_four_of_bytes_and_drained_at_half():
    intake = Intake(max_records=5, max_bytes=1_000, wait_s=0.0)
    full = [intake.put(n, 1) for n in range(HIGH_WATER_RECORD_TAKES * 5)]
    assert full.index(True) == HIGH_WATER_RECORD_TAKES * 5 - 1
    assert not intake.below_low_water()

    async def take_all():
        while len(intake) > HIGH_WATER_RECORD_TAKES * 5 // 2:
            await intake.take()

    asyncio.run(take_all())
    assert intake.below_low_water()

    by_bytes = Intake(max_records=1_000, max_bytes=100, wait_s=0.0)
    full = [by_bytes.put(n, 30) for n in range(HIGH_WATER_TAKES * 100 // 30 + 1)]
    assert full.index(True) == HIGH_WATER_TAKES * 100 // 30


def test_clearing_the_intake_empties_it_bytes_included():
    intake = Intake(max_records=5, max_bytes=100, wait_s=0.0)
    for n in range(3):
        intake.put(n, 150)
    assert intake.clear() == [0, 1, 2]
    assert len(intake) == 0 and intake.below_low_water()
    # Had the bytes stayed counted, this one would report the intake full.
    assert intake.put(3, 1) is False
