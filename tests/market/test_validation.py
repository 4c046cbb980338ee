"""Validation policy on small malformed files: what is fatal, what is cleaned, all-or-nothing."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from market.importers import import_dataset, read_long
from market.panel import Panel, PanelError
from market.validation import DataImportError, parse_dates

HEADER = "date,ticker,open,high,low,close,volume"
GOOD_ROWS = [
    "2020-01-02,AAA,10,11,9,10.5,1000",
    "2020-01-03,AAA,10.5,11.5,10,11,1200",
    "2020-01-06,AAA,11,12,10.5,11.5,900",
    "2020-01-02,BBB,20,21,19,20.5,500",
    "2020-01-03,BBB,20.5,21.5,20,21,400",
    "2020-01-06,BBB,21,22,20.5,21.5,300",
]


def write_csv(tmp_path, rows, header=HEADER, name="bars.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def replace_row(index, row):
    rows = list(GOOD_ROWS)
    rows[index] = row
    return rows


def import_error(path, **kwargs) -> DataImportError:
    with pytest.raises(DataImportError) as info:
        read_long(path, **kwargs)
    return info.value


def test_good_file_imports_without_value_issues(tmp_path):
    panel, report = read_long(write_csv(tmp_path, GOOD_ROWS))
    assert (panel.n_dates, panel.n_assets) == (3, 2)
    assert report.rows_read == report.rows_imported == 6
    assert not report.fatal_issues
    assert not [issue for issue in report.issues if issue.kind == "value"]
    # amount is the traded value, close x volume
    assert panel.field("amount")[0, 0] == pytest.approx(10.5 * 1000)


def test_missing_column_is_named_with_the_expected_columns(tmp_path):
    rows = [",".join(r.split(",")[:5] + r.split(",")[6:]) for r in GOOD_ROWS]  # drop close
    error = import_error(write_csv(tmp_path, rows, header="date,ticker,open,high,low,volume"))
    message = str(error)
    assert "missing required column 'close'" in message
    assert "expected columns: date,ticker,open,high,low,close,volume[,amount][,adj_close]" in message
    assert [issue.code for issue in error.report.fatal_issues] == ["missing_column"]
    assert isinstance(error, PanelError)


def test_headers_are_case_and_space_insensitive(tmp_path):
    panel, _ = read_long(write_csv(tmp_path, GOOD_ROWS, header=" Date ,TICKER,Open,High,Low,Close, Volume"))
    assert panel.n_assets == 2


def test_unparseable_date_gives_the_line_and_value(tmp_path):
    error = import_error(write_csv(tmp_path, replace_row(2, "2015-13-01,AAA,11,12,10.5,11.5,900")))
    assert "line 4: date '2015-13-01'" in str(error)  # line 1 is the header
    assert error.report.issue("unparseable_date").count == 1


def test_only_five_examples_but_the_full_count(tmp_path):
    rows = GOOD_ROWS + [f"not-a-date-{i},CCC,1,2,0.5,1.5,10" for i in range(8)]
    error = import_error(write_csv(tmp_path, rows))
    issue = error.report.issue("unparseable_date")
    assert issue.count == 8 and len(issue.examples) == 5
    assert "not-a-date-4" in str(error) and "not-a-date-5" not in str(error)


def test_duplicate_rows_are_fatal_with_examples(tmp_path):
    rows = GOOD_ROWS + ["2020-01-03,AAA,10.6,11.6,10.1,11.1,1300"]
    error = import_error(write_csv(tmp_path, rows))
    issue = error.report.issue("duplicate_rows")
    assert issue.fatal and issue.count == 1
    assert issue.examples == ["AAA 2020-01-03 (line 3, line 8)"]
    assert "appear more than once" in str(error)


def test_row_without_ticker_is_fatal(tmp_path):
    error = import_error(write_csv(tmp_path, replace_row(4, "2020-01-03, ,20.5,21.5,20,21,400")))
    assert error.report.issue("missing_ticker").examples == ["line 6"]


def test_every_fatal_issue_is_listed_at_once(tmp_path):
    rows = replace_row(1, "2020-02-30,AAA,10.5,11.5,10,11,1200")
    rows[4] = "2020-01-03,,20.5,21.5,20,21,400"
    codes = {issue.code for issue in import_error(write_csv(tmp_path, rows)).report.fatal_issues}
    assert codes == {"unparseable_date", "missing_ticker"}


def test_non_positive_price_is_set_to_nan_and_reported(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(1, "2020-01-03,AAA,10.5,11.5,10,0,1200")))
    issue = report.issue("non_positive_price")
    assert not issue.fatal and issue.count == 1 and issue.action.startswith("set to NaN")
    assert issue.examples == ["AAA 2020-01-03 close=0"]
    assert np.isnan(panel.close[1, 0]) and panel.field("open")[1, 0] == pytest.approx(10.5)


def test_high_below_low_keeps_only_the_close(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(1, "2020-01-03,AAA,10.5,9,12,11,1200")))
    issue = report.issue("high_below_low")
    assert issue.count == 1 and "close kept" in issue.action
    for name in ("open", "high", "low"):
        assert np.isnan(panel.field(name)[1, 0])
    assert panel.close[1, 0] == pytest.approx(11)


def test_negative_volume_is_set_to_nan(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(2, "2020-01-06,AAA,11,12,10.5,11.5,-900")))
    assert report.issue("negative_volume").count == 1
    assert np.isnan(panel.field("volume")[2, 0])


def test_open_outside_range_is_reported_and_kept(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(2, "2020-01-06,AAA,13,12,10.5,11.5,900")))
    issue = report.issue("open_outside_range")
    assert issue.count == 1 and issue.action == "kept as is"
    assert panel.field("open")[2, 0] == pytest.approx(13)


def test_rows_without_any_valid_price_are_dropped_and_counted(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(5, "2020-01-06,BBB,0,,-1,0,300")))
    assert report.issue("no_valid_price").count == 1
    assert report.rows_read == 6 and report.rows_imported == 5
    assert np.isnan(panel.values[:, 2, 1]).all()


def test_non_numeric_value_is_cleaned(tmp_path):
    panel, report = read_long(write_csv(tmp_path, replace_row(0, "2020-01-02,AAA,abc,11,9,10.5,1000")))
    assert report.issue("non_numeric").examples == ["AAA 2020-01-02 open='abc'"]
    assert np.isnan(panel.field("open")[0, 0])


@pytest.mark.parametrize(
    "row, code",
    [
        ("2020-01-03,AAA,10.5,11.5,10,0,1200", "non_positive_price"),
        ("2020-01-03,AAA,10.5,9,12,11,1200", "high_below_low"),
        ("2020-01-03,AAA,10.5,11.5,10,11,-5", "negative_volume"),
    ],
)
def test_strict_mode_makes_value_issues_fatal(tmp_path, row, code):
    path = write_csv(tmp_path, replace_row(1, row))
    read_long(path)  # fine without strict
    error = import_error(path, strict=True)
    assert code in {issue.code for issue in error.report.fatal_issues}
    assert "strict" in str(error)


def test_dates_with_time_zones_keep_their_local_calendar_date():
    days = parse_dates(
        pd.Series(
            [
                "2016-01-04 16:00:00-05:00",
                "2016-01-05T00:30:00+09:00",
                "2016-01-06",
                "20160107",
                "2016-01-08T09:30:00Z",
            ]
        )
    )
    assert [str(np.datetime64(int(d), "D")) for d in days] == [
        "2016-01-04", "2016-01-05", "2016-01-06", "2016-01-07", "2016-01-08",
    ]  # fmt: skip
    aware = pd.Series(pd.to_datetime(["2016-01-04 23:00"]).tz_localize("America/New_York"))
    assert str(np.datetime64(int(parse_dates(aware)[0]), "D")) == "2016-01-04"


def test_report_is_json_and_renders(tmp_path):
    _, report = read_long(write_csv(tmp_path, replace_row(1, "2020-01-03,AAA,10.5,9,12,11,1200")))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rows_read"] == 6 and any(issue["code"] == "high_below_low" for issue in data["issues"])
    out = io.StringIO()
    report.render(Console(file=out, width=120))
    assert "high_below_low" in out.getvalue()


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_failed_import_leaves_the_existing_panel_byte_identical(tmp_path):
    dest = tmp_path / "market" / "prices"
    good = write_csv(tmp_path, GOOD_ROWS, name="good.csv")
    report = import_dataset(good, dest)
    assert (dest / "import_report.json").exists()
    before = snapshot(dest)

    bad = write_csv(tmp_path, GOOD_ROWS + ["2020-01-03,AAA,1,2,0.5,1.5,10"], name="bad.csv")
    with pytest.raises(DataImportError):
        import_dataset(bad, dest)
    strict_bad = write_csv(tmp_path, replace_row(1, "2020-01-03,AAA,10.5,11.5,10,0,1200"), name="strict.csv")
    with pytest.raises(DataImportError):
        import_dataset(strict_bad, dest, strict=True)

    assert snapshot(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["prices"]  # no temp dirs left
    assert Panel.load(dest).n_assets == 2 and report.rows_imported == 6


def test_failed_import_into_a_new_place_creates_nothing(tmp_path):
    bad = write_csv(tmp_path, GOOD_ROWS, header="date,ticker,open,high,low,volume,close_price")
    with pytest.raises(DataImportError, match="missing required column 'close'"):
        import_dataset(bad, tmp_path / "new" / "panel")
    assert not (tmp_path / "new").exists()
