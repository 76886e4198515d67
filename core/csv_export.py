"""CSV downloads, safe to open in a spreadsheet.

Every CSV the portal writes goes through `csv_response`. A text cell that starts with `=`, `+`,
`-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets (a key
named `=HYPERLINK(…)` would run when the export is opened): OWASP's rule prefixes such a cell with
a single quote, which the spreadsheet shows as text. Numbers stay numbers — ints are written as
they are, and a text cell that is exactly a decimal number (`-1.500000`, a refund's amount) is not
touched, so the spreadsheet still sums it.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def spreadsheet_safe(cell: Any) -> Any:
    """Return `cell`, with a text cell a spreadsheet would read as a formula made plain text."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """Yield the CSV lines of `rows`, every cell made spreadsheet-safe."""
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow([spreadsheet_safe(cell) for cell in row])


def csv_response(rows: Iterable[Iterable[Any]], filename: str, request: Any) -> HttpResponse:
    """Stream `rows` as a CSV download named `filename` (a StreamingHttpResponse)."""
    lines = csv_lines(rows)
    content: Any = lines
    if isinstance(request, ASGIRequest):
        # Under ASGI Django would buffer a sync iterator whole: feed it in batches from a thread.
        def batch() -> str:
            return "".join(itertools.islice(lines, 2000))

        async def stream() -> AsyncIterator[str]:
            while chunk := await sync_to_async(batch, thread_sensitive=True)():
                yield chunk

        content = stream()
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response  # type: ignore[return-value]  # views are typed as returning HttpResponse
