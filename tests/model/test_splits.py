"""Calendar splits with a purge: no target window reaches into the next split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.splits import Splits, default_splits
from model.targets import HORIZON

H = HORIZON


def _dates(start="2010-01-04", periods=756) -> np.ndarray:
    return pd.bdate_range(start, periods=periods).to_numpy().astype("datetime64[D]")


def _first_at(dates, day) -> int:
    return int(np.searchsorted(dates, np.datetime64(day, "D")))


@pytest.mark.parametrize(
    "valid_start, test_start, test_end",
    [
        ("2011-01-01", "2012-01-01", None),
        ("2010-09-15", "2011-03-01", "2012-06-29"),
        ("2010-06-01", "2010-12-01", None),
    ],
)
def test_purge(valid_start, test_start, test_end):
    dates = _dates()
    splits = Splits(valid_start, test_start, test_end)
    pos = splits.positions(dates)
    valid_at, test_at = _first_at(dates, valid_start), _first_at(dates, test_start)
    end_at = len(dates) if test_end is None else int(np.searchsorted(dates, np.datetime64(test_end), "right"))
    train, valid, test = pos["train"], pos["valid"], pos["test"]
    assert len(train) and len(valid) and len(test)
    # every target window (t, t + H] stays inside its own split
    assert (train + H < valid_at).all()
    assert (valid >= valid_at).all() and (valid + H < test_at).all()
    assert (test >= test_at).all() and (test + H < end_at).all()
    assert train.max() + H < valid.min() and valid.max() + H < test.min()
    # the dates are the split's calendar dates
    assert (dates[train] < np.datetime64(valid_start)).all()
    assert (dates[valid] >= np.datetime64(valid_start)).all()
    assert (dates[valid] < np.datetime64(test_start)).all()
    assert (dates[test] >= np.datetime64(test_start)).all()
    if test_end is not None:
        assert (dates[test + H] <= np.datetime64(test_end)).all()
    # the purge drops exactly the dates whose targets would cross, no more
    assert train.min() == 0 and train.max() == valid_at - H - 1
    assert valid.min() == valid_at and valid.max() == test_at - H - 1
    assert test.min() == test_at and test.max() == end_at - H - 1
    for split in (train, valid, test):
        assert (np.diff(split) == 1).all()


def test_custom_horizon():
    dates = _dates()
    pos = Splits("2011-01-01", "2012-01-01", horizon=5).positions(dates)
    assert pos["train"].max() == _first_at(dates, "2011-01-01") - 6


def test_default_splits_make_the_last_calendar_year_test():
    dates = _dates()  # 2010-01-04 .. 2012-11-26
    assert str(dates[-1]).startswith("2012-11")
    splits = default_splits(dates)
    assert (splits.valid_start, splits.test_start, splits.test_end) == ("2011-01-01", "2012-01-01", None)
    assert splits.horizon == H
    pos = splits.positions(dates)
    years = {name: set(pd.DatetimeIndex(dates[p]).year) for name, p in pos.items()}
    assert years == {"train": {2010}, "valid": {2011}, "test": {2012}}


def test_default_splits_skip_a_stub_final_year():
    # data ending in February: too little of that year to test on, so the year before is test
    dates = _dates(periods=800)
    dates = dates[dates <= np.datetime64("2013-02-15")]
    splits = default_splits(dates)
    assert (splits.valid_start, splits.test_start) == ("2011-01-01", "2012-01-01")
    assert default_splits(dates, horizon=10).horizon == 10


def test_to_dict_round_trips():
    splits = Splits("2011-01-01", "2012-01-01", "2012-06-30")
    assert Splits(**splits.to_dict()) == splits


@pytest.mark.parametrize(
    "valid_start, test_start, test_end",
    [
        ("2012-01-01", "2011-01-01", None),  # validation after test
        ("2011-01-01", "2011-01-01", None),  # empty validation
        ("2009-01-01", "2011-01-01", None),  # no training data
        ("2011-01-01", "2014-01-01", None),  # test after the data
        ("2011-01-01", "2012-01-01", "2011-06-01"),  # test ends before it starts
    ],
)
def test_bad_order_raises_with_a_clear_message(valid_start, test_start, test_end):
    dates = _dates()
    with pytest.raises(ValueError) as info:
        Splits(valid_start, test_start, test_end).positions(dates)
    message = str(info.value)
    assert "train < validation < test" in message
    assert valid_start in message and test_start in message
    assert "2010-01-04" in message and "2012-11-26" in message
