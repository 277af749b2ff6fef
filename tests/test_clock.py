"""One clock: the formats that are contracts, the manual clock, and the system clock behind it."""

from __future__ import annotations

import datetime as dt
import math
import time

import pytest

from mlgitops.adapters import clock as system_clock
from mlgitops.controller import state
from mlgitops.core import clock, decisions

pytestmark = pytest.mark.fast

AT = dt.datetime(2026, 12, 7, 12, 15, 0, 123_999, tzinfo=dt.UTC).timestamp()


def test_formats_are_utc_and_truncate_to_their_precision() -> None:
    assert clock.iso(AT) == "2026-12-07T12:15:00Z"
    assert clock.iso(AT, ms=True) == "2026-12-07T12:15:00.123Z"
    assert clock.compact(AT) == "20261207T121500"
    assert clock.compact(AT, ms=True) == "20261207T121500123"


def test_decision_records_keep_their_second_precision_format() -> None:
    assert decisions.iso(AT) == "2026-12-07T12:15:00Z"
    made = decisions.make_id(model="m", kind=decisions.Kind.DEPLOY, at=AT, version="abc")
    assert made.startswith("m-20261207T121500-deploy-") and decisions.valid_id(made)


def test_state_records_keep_their_millisecond_format() -> None:
    manual = clock.ManualClock(at=AT)
    assert state.now(manual) == "2026-12-07T12:15:00.123Z"
    stamp = dt.datetime.fromisoformat(state.now())
    assert abs(stamp.timestamp() - time.time()) < 60


def test_manual_clock_moves_only_forward_when_told() -> None:
    c = clock.ManualClock(at=100.0, mono=5.0)
    assert (c.wall(), c.monotonic()) == (100.0, 5.0)
    c.advance(2.5)
    assert (c.wall(), c.monotonic()) == (102.5, 7.5)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="moves forward"):
            c.advance(bad)
    assert c.monotonic() > clock.NEVER and clock.NEVER < -1e300


def test_system_clock_reads_the_machine() -> None:
    c: clock.Clock = system_clock.SYSTEM
    before = time.time()
    assert before - 1 <= c.wall() <= time.time() + 1
    m1 = c.monotonic()
    assert c.monotonic() >= m1
    assert system_clock.now_iso(clock.ManualClock(at=AT)) == "2026-12-07T12:15:00Z"
