"""Calendar splits with a purge: no target window of one split reaches into the next."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from model.targets import HORIZON


@dataclass(frozen=True)
class Splits:
    valid_start: str  # first validation date (YYYY-MM-DD)
    test_start: str  # first test date
    test_end: str | None = None  # last test date (inclusive); None = the panel's end
    horizon: int = HORIZON

    def to_dict(self) -> dict:
        return asdict(self)

    def positions(self, dates: np.ndarray) -> dict[str, np.ndarray]:
        """Query date positions per split. A date D belongs to a split when D and its whole target
        window (D, D + horizon] lie inside that split (the purge)."""
        dates = np.asarray(dates, dtype="datetime64[D]")
        valid_at = int(np.searchsorted(dates, np.datetime64(self.valid_start, "D")))
        test_at = int(np.searchsorted(dates, np.datetime64(self.test_start, "D")))
        end_at = (
            len(dates)
            if self.test_end is None
            else int(np.searchsorted(dates, np.datetime64(self.test_end, "D"), side="right"))
        )
        if not 0 < valid_at < test_at < end_at:
            raise ValueError(
                f"splits need train < validation < test inside the data ({dates[0]} .. {dates[-1]}); "
                f"got valid_start={self.valid_start}, test_start={self.test_start}, test_end={self.test_end}"
            )
        h = self.horizon
        return {
            "train": np.arange(0, max(valid_at - h, 0)),
            "valid": np.arange(valid_at, max(test_at - h, valid_at)),
            "test": np.arange(test_at, max(end_at - h, test_at)),
        }


def default_splits(dates: np.ndarray, horizon: int = HORIZON) -> Splits:
    """The last calendar year is test, the year before it validation, everything earlier training."""
    last = pd.Timestamp(np.asarray(dates)[-1])
    test_year = last.year if last.day_of_year > 120 else last.year - 1
    return Splits(valid_start=f"{test_year - 1}-01-01", test_start=f"{test_year}-01-01", horizon=horizon)
