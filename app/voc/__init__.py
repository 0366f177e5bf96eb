"""Voice of the customer: what customers write and answer (sentiment.py, themes.py and
enrich.py: what texts say; surveys.py: NPS, CSAT, CES)."""

from datetime import UTC, datetime, timedelta

EARLIEST = datetime.min.replace(tzinfo=UTC)


def earlier(moment: datetime, length: timedelta) -> datetime:
    """`length` before `moment`, or the earliest moment there is (a period reaching back past
    year 1 starts there)."""
    try:
        return moment - length
    except OverflowError:
        return EARLIEST
