"""The CSV of a search (``.csv``): one page, or with ``_stream=on`` every
match page after page, written as Datasette writes a table's CSV."""
import csv
import dataclasses
import io
import time

from . import one_trip, tableapi

TABLE = "images"


async def send_csv(send, plan, columns, pages):
    """A CSV of ``pages`` (an async iterator of lists of rows) as Datasette writes a table's CSV: headings (an expanded
    column followed by <column>_label; none with _header=off), text/plain
    (text/csv and an attachment with _dl)."""
    expanded = [c for c in columns if c in plan.table.labels]
    headers = [(b"content-type", b"text/csv; charset=utf-8" if plan.table.download else b"text/plain; charset=utf-8")]
    if plan.table.download:
        headers.append((b"content-disposition", f'attachment; filename="{TABLE}.csv"'.encode()))
    if plan.table.stream:
        headers.append((b"x-laion-stream-cap", str(tableapi.STREAM_CAP).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    def lines(rows, first):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if first and plan.table.header:
            writer.writerow(tableapi.csv_headings(columns, expanded))
        for row in rows:
            writer.writerow(tableapi.csv_row(columns, row, expanded))
        return buffer.getvalue().encode("utf-8")

    first = True
    async for rows in pages:
        await send({"type": "http.response.body", "body": lines(rows, first), "more_body": True})
        first = False
    if first and plan.table.header:
        await send({"type": "http.response.body", "body": lines([], True), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def one_page(rows):
    yield rows


async def stream_csv(datasette, db, plan, run_page, send):
    """``.csv?_stream=on``: every match, page after page (keyset, best
    first; or offsets of a re-sorted search), up to tableapi.STREAM_CAP rows
    and STREAM_SECONDS of work. ``run_page(conn, page_plan)`` runs one page's
    search in the SQL thread: (result, labels, facet source)."""
    began = time.perf_counter()

    async def pages():
        sent = 0
        request = plan.search
        while True:
            page_plan = dataclasses.replace(plan, search=request)
            result, labels, _ = await one_trip.in_one_trip(
                datasette, db, lambda conn, page_plan=page_plan: run_page(conn, page_plan),
                plan.table.time_limit_ms)
            label_of = {("domain_id", k): v for k, v in labels.items()}
            rows = result.rows[: tableapi.STREAM_CAP - sent]
            _, shown = tableapi.rows_for(result.columns, rows, plan.table, label_of)
            sent += len(shown)
            yield shown
            token = result.next_token
            if not token or sent >= tableapi.STREAM_CAP or time.perf_counter() - began > STREAM_SECONDS:
                return
            if token.startswith("o"):
                request = dataclasses.replace(request, offset=int(token[1:]), after=None)
            else:
                request = dataclasses.replace(request, after=int(token))

    columns = list(plan.table.columns)
    await send_csv(send, plan, columns, pages())


STREAM_SECONDS = 120  # of SQL work for one streamed CSV
