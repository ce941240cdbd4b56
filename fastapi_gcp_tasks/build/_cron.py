"""Unix-cron schedules evaluated in a tz-database time zone, as Cloud Scheduler runs them.

Syntax (strict: anything else is refused with a message naming the field):

- exactly five whitespace-separated fields: minute (0-59), hour (0-23), day of month (1-31),
  month (1-12 or JAN-DEC), day of week (0-7 or SUN-SAT; 0 and 7 are Sunday);
- each field is a comma-separated list of `*`, `*/STEP`, `N`, `A-B` or `A-B/STEP`, with `A <= B` and
  `STEP >= 1`; names are case-insensitive and may be range ends (`MON-FRI`);
- when both day fields are restricted (neither starts with `*`), a day matches if either one does
  (`0 0 1 * MON` runs on the 1st and on every Monday); otherwise both must match.

Cloud Scheduler also accepts the legacy App Engine syntax (`every 5 minutes`); this module does not.

Daylight-saving changes. Cloud Scheduler runs "on wall clock time" and only warns that times that
occur twice may see anomalies, without saying which. This module follows Vixie cron, whose manual
states the rule precisely. A job is *fixed-time* when neither its minute nor its hour field contains
`*`, and *wildcard* otherwise.

- Spring forward (a gap, e.g. 02:00-02:59 does not exist in America/New_York on 2026-03-08): a
  fixed-time job due inside the gap runs once, at the instant the clocks change (03:00 local, 07:00
  UTC); several skipped times collapse into that one run. A wildcard job simply has no runs in the gap.
  So `30 2 * * *` runs at 03:00 EDT that day; `30 * * * *` runs at 01:30 EST and 03:30 EDT.
- Fall back (an overlap, e.g. 01:00-01:59 happens twice in America/New_York on 2026-11-01): a
  fixed-time job due inside the overlap runs once, at the first occurrence; a wildcard job runs at
  both. So `30 1 * * *` runs at 01:30 EDT (05:30 UTC) only; `30 * * * *` runs at 01:30 EDT and again
  at 01:30 EST (06:30 UTC). A job due at 02:30 on that day is not ambiguous and runs once, at 02:30 EST.

Two wall-clock times never map to the same instant twice: when a collapsed gap run coincides with a
regular run (`*/15 2,3 * * *` at 03:00), the job runs once.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

from fastapi_gcp_tasks.exception import TaskLimitError

__all__ = ["CronSchedule", "parse_time_zone"]

_UTC = dt.UTC
_MINUTE = dt.timedelta(minutes=1)
_MAX_SHIFT = dt.timedelta(hours=3)
"""Larger than any daylight-saving shift in the tz database (the largest is 2 hours)."""
_SEARCH_YEARS = 30
"""How far ahead a schedule is searched; `0 0 29 2 *` may wait 8 years, `0 0 31 2 *` never runs."""

_MONTHS = {
    name: i
    for i, name in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)
}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"(?:(?P<star>\*)|(?P<lo>[0-9]+|[A-Za-z]+)(?:-(?P<hi>[0-9]+|[A-Za-z]+))?)(?:/(?P<step>[0-9]+))?")


def _value(token: str, field: str, low: int, high: int, names: dict[str, int], text: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token.upper() in names:
        number = names[token.upper()]
    else:
        raise _error(text, f"{field} value {token!r} is not a number")
    if not low <= number <= high:
        raise _error(text, f"{field} value {number} is outside {low}-{high}")
    return number


def _error(text: str, reason: str, *, param: str = "schedule") -> TaskLimitError:
    return TaskLimitError(f"{param}={text!r} is not a valid unix-cron schedule: {reason}", param=param)


def _parse_field(source: str, index: int, text: str) -> frozenset[int]:
    field, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for item in source.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _error(text, f"{field} item {item!r} is not `*`, `N`, `A-B`, optionally followed by `/STEP`")
        step_text = match["step"]
        if match["star"]:
            start, stop = low, high
        else:
            start = _value(match["lo"], field, low, high, names, text)
            if match["hi"] is None:
                if step_text is not None:
                    raise _error(text, f"{field} item {item!r}: a step needs `*` or a range before it")
                stop = start
            else:
                stop = _value(match["hi"], field, low, high, names, text)
                if stop < start:
                    raise _error(text, f"{field} range {item!r} goes backwards")
        step = 1
        if step_text is not None:
            step = int(step_text)
            if not 1 <= step <= high:
                raise _error(text, f"{field} step {step_text!r} must be between 1 and {high}")
        values.update(range(start, stop + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_time_zone(name: str, *, param: str = "time_zone") -> dt.tzinfo:
    """The tz-database zone `name` ("" or any spelling of "utc" is UTC); `TaskLimitError` naming `param`."""
    if name == "" or name.lower() == "utc":
        return _UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise TaskLimitError(f"{param}={name!r} is not a time zone of the tz database", param=param) from None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed unix-cron schedule. Build it with `CronSchedule.parse`."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """Cron numbering: 0 is Sunday."""
    days_or: bool
    """Both day fields restricted: a day matches when either matches."""
    fixed_time: bool
    """Neither the minute nor the hour field contains `*` (see the module docstring)."""

    @classmethod
    def parse(cls, text: str, *, param: str = "schedule") -> CronSchedule:
        """Parse `text`, raising `TaskLimitError` naming `param` with the reason when it is not valid."""
        if not isinstance(text, str):
            raise TaskLimitError(f"{param} must be a string, not {type(text).__name__}", param=param)
        parts = text.split()
        if len(parts) != 5:
            raise _error(text, f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
        try:
            fields = [_parse_field(part, i, text) for i, part in enumerate(parts)]
        except TaskLimitError as exc:
            if param == "schedule":
                raise
            raise TaskLimitError(str(exc).replace("schedule=", f"{param}=", 1), param=param) from None
        return cls(
            text=text,
            minutes=tuple(sorted(fields[0])),
            hours=tuple(sorted(fields[1])),
            days=fields[2],
            months=fields[3],
            weekdays=fields[4],
            days_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
            fixed_time="*" not in parts[0] and "*" not in parts[1],
        )

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        return in_month or in_week if self.days_or else in_month and in_week

    def next_wall_time(self, start: dt.datetime) -> dt.datetime | None:
        """The first naive wall-clock minute at or after `start` that matches, or None within 30 years."""
        w = start.replace(second=0, microsecond=0, tzinfo=None)
        if w < start.replace(tzinfo=None):
            w += _MINUTE
        limit = w.year + _SEARCH_YEARS
        while w.year <= limit:
            if w.month not in self.months:
                w = dt.datetime(w.year + w.month // 12, w.month % 12 + 1, 1)
                continue
            if not self._day_matches(w.date()):
                w = dt.datetime.combine(w.date() + dt.timedelta(days=1), dt.time())
                continue
            i = bisect.bisect_left(self.hours, w.hour)
            if i == len(self.hours):
                w = dt.datetime.combine(w.date() + dt.timedelta(days=1), dt.time())
                continue
            if self.hours[i] != w.hour:
                w = w.replace(hour=self.hours[i], minute=0)
            j = bisect.bisect_left(self.minutes, w.minute)
            if j == len(self.minutes):
                w = w.replace(minute=0) + dt.timedelta(hours=1)
                continue
            return w.replace(minute=self.minutes[j])
        return None

    def instants(self, wall: dt.datetime, tz: dt.tzinfo) -> list[dt.datetime]:
        """The UTC instants at which a run due at naive wall time `wall` happens, per the DST rules."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(_UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(_UTC)
        if first == second:
            return [first]
        if first.astimezone(tz).replace(tzinfo=None) != wall:
            return [_transition(tz, second, first)] if self.fixed_time else []
        return [first] if self.fixed_time else [first, second]

    def next_after(self, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
        """The first run strictly after the tz-aware instant `after`, as a UTC datetime (None: never)."""
        after = after.astimezone(_UTC)
        local = after.astimezone(tz).replace(tzinfo=None)
        near_change = _offset(tz, after - _MAX_SHIFT) != _offset(tz, after + _MAX_SHIFT)
        wall: dt.datetime | None = local - _MAX_SHIFT if near_change else local
        best: dt.datetime | None = None
        slack = _MAX_SHIFT if near_change else dt.timedelta(0)
        while True:
            assert wall is not None
            wall = self.next_wall_time(wall)
            if wall is None:
                return best
            if best is not None and wall > best.astimezone(tz).replace(tzinfo=None) + slack:
                return best
            for instant in self.instants(wall, tz):
                if instant > after and (best is None or instant < best):
                    best = instant
                    if _offset(tz, best) != _offset(tz, after) or _offset(tz, best + _MAX_SHIFT) != _offset(tz, best):
                        slack = _MAX_SHIFT
            wall += _MINUTE


def _offset(tz: dt.tzinfo, instant: dt.datetime) -> dt.timedelta | None:
    return instant.astimezone(tz).utcoffset()


def _transition(tz: dt.tzinfo, before: dt.datetime, after: dt.datetime) -> dt.datetime:
    """The first instant in (before, after] whose offset differs from `before`'s: where a gap ends."""
    low, high = before, after
    start = _offset(tz, before)
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            middle = low + dt.timedelta(seconds=1)
        if _offset(tz, middle) == start:
            low = middle
        else:
            high = middle
    return high
