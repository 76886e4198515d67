"""Every CSV the portal writes is safe to open in a spreadsheet, and numbers stay numbers."""

from __future__ import annotations

import csv
import io

import pytest

from core.csv_export import csv_lines, spreadsheet_safe


@pytest.mark.parametrize(
    "cell",
    ["=1+1", '=HYPERLINK("http://evil.example","x")', "+41 44 000", "-2+3", "-", "@SUM(A1)",
     "\tcmd", "\r=1", "-1.5e3"],
)  # fmt: skip
def test_text_a_spreadsheet_would_run_is_made_plain_text(cell):  # type: ignore[no-untyped-def]
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell", [-1_500_000, 0, 42, "-1.500000", "+2", "-7", "12.000001", "Server", "a=b", "", None]
)
def test_numbers_and_ordinary_text_are_left_alone(cell):  # type: ignore[no-untyped-def]
    assert spreadsheet_safe(cell) == cell


def test_a_row_keeps_its_numeric_columns_numeric():  # type: ignore[no-untyped-def]
    line = "".join(csv_lines([["=cmd|' /C calc'!A0", -1_500_000, "-1.500000", "refund"]]))
    assert next(csv.reader(io.StringIO(line))) == [
        "'=cmd|' /C calc'!A0",
        "-1500000",
        "-1.500000",
        "refund",
    ]
