"""Cron parsing and evaluation across daylight-saving changes, checked against a minute-by-minute scan."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_gcp_tasks.build._cron import CronSchedule, parse_time_zone
from fastapi_gcp_tasks.exception import TaskArgumentError, TaskLimitError

UTC = dt.UTC
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def runs(schedule: str, tz: dt.tzinfo, start: dt.datetime, count: int) -> list[dt.datetime]:
    cron = CronSchedule.parse(schedule)
    found: list[dt.datetime] = []
    when: dt.datetime | None = start
    for _ in range(count):
        assert when is not None
        when = cron.next_after(when, tz)
        assert when is not None
        found.append(when)
    return found


def utc(*args: int) -> dt.datetime:
    year, month, day, hour, minute = (*args, 0, 0)[:5]
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


# parsing


@pytest.mark.parametrize(
    ("schedule", "field", "values"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("5,10-12 * * * *", "minutes", (5, 10, 11, 12)),
        ("0 0-23/6 * * *", "hours", (0, 6, 12, 18)),
        ("0 0 * JAN,mar-May *", "months", frozenset({1, 3, 4, 5})),
        ("0 0 * * MON-FRI", "weekdays", frozenset({1, 2, 3, 4, 5})),
        ("0 0 * * 7", "weekdays", frozenset({0})),
        ("0 0 * * 5-7", "weekdays", frozenset({5, 6, 0})),
        ("  0   0 1 * *  ", "days", frozenset({1})),
    ],
)
def test_fields_are_parsed(schedule: str, field: str, values: object) -> None:
    assert getattr(CronSchedule.parse(schedule), field) == values


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("", "expected 5 fields"),
        ("* * * *", "expected 5 fields"),
        ("0 0 * * * *", "expected 5 fields"),
        ("@daily", "expected 5 fields"),
        ("every 5 minutes", "expected 5 fields"),
        ("60 * * * *", "minute value 60"),
        ("* 24 * * *", "hour value 24"),
        ("* * 0 * *", "day of month value 0"),
        ("* * 32 * *", "day of month value 32"),
        ("* * * 13 *", "month value 13"),
        ("* * * * 8", "day of week value 8"),
        ("* * * FOO *", "not a number"),
        ("* * * * MONDAY", "not a number"),
        ("* * * JAN *", None),
        ("5-1 * * * *", "goes backwards"),
        ("*/0 * * * *", "step '0'"),
        ("*/61 * * * *", "step '61'"),
        ("5/10 * * * *", "a step needs"),
        ("1,,2 * * * *", "item ''"),
        ("-1 * * * *", "item '-1'"),
        ("1-2-3 * * * *", "item '1-2-3'"),
        ("* * * * \uff15", "item"),
        ("? * * * *", "item '?'"),
        ("L * * * *", "not a number"),
    ],
)
def test_invalid_schedules_name_the_parameter_and_the_reason(schedule: str, reason: str | None) -> None:
    if reason is None:
        CronSchedule.parse(schedule)
        return
    with pytest.raises(TaskLimitError, match=reason) as info:
        CronSchedule.parse(schedule)
    assert info.value.param == "schedule"
    assert isinstance(info.value, TaskArgumentError)
    assert str(info.value).startswith(f"schedule={schedule!r}")


def test_the_parameter_name_can_be_chosen() -> None:
    with pytest.raises(TaskLimitError, match=r"^cron='61 \* \* \* \*'") as info:
        CronSchedule.parse("61 * * * *", param="cron")
    assert info.value.param == "cron"


@pytest.mark.parametrize("name", ["", "utc", "UTC", "Utc"])
def test_utc_spellings(name: str) -> None:
    assert parse_time_zone(name).utcoffset(None) == dt.timedelta(0)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "America/", "\x00"])
def test_unknown_time_zones(name: str) -> None:
    with pytest.raises(TaskLimitError, match="not a time zone") as info:
        parse_time_zone(name)
    assert info.value.param == "time_zone"


# evaluation


def test_day_of_month_and_day_of_week_are_or_when_both_are_restricted() -> None:
    # 2026-03-01 is a Sunday: the 1st, then every Monday, then the 1st of April
    found = runs("0 0 1 * MON", UTC, utc(2026, 2, 28), 6)
    assert [w.day for w in found] == [1, 2, 9, 16, 23, 30]
    assert runs("0 0 1 * *", UTC, utc(2026, 2, 28), 2) == [utc(2026, 3, 1), utc(2026, 4, 1)]
    # `*/10` starts with `*`: both must match, a Monday that is the 1st, 11th, 21st or 31st
    assert runs("0 0 */10 * MON", UTC, utc(2026, 3, 1), 2) == [utc(2026, 5, 11), utc(2026, 6, 1)]


def test_rare_and_impossible_dates() -> None:
    assert runs("0 0 29 2 *", UTC, utc(2026, 3, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    assert CronSchedule.parse("0 0 31 2 *").next_after(utc(2026, 1, 1), UTC) is None
    assert CronSchedule.parse("0 0 30 2 *").next_wall_time(dt.datetime(2026, 1, 1)) is None


def test_next_after_is_strictly_after() -> None:
    cron = CronSchedule.parse("0 * * * *")
    assert cron.next_after(utc(2026, 1, 1, 5, 0), UTC) == utc(2026, 1, 1, 6, 0)
    assert cron.next_after(utc(2026, 1, 1, 4, 59) + dt.timedelta(seconds=59.9), UTC) == utc(2026, 1, 1, 5, 0)


def test_new_york_spring_forward() -> None:
    start = utc(2026, 3, 7, 12)
    # fixed-time: 02:30 does not exist on 03-08 and runs when the clocks change, 03:00 EDT
    assert runs("30 2 * * *", NEW_YORK, start, 2) == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]
    # several skipped times collapse into that one run, which also is the 03:00 run
    assert runs("0,20,40 2,3 * * *", NEW_YORK, start, 4) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 20),
        utc(2026, 3, 8, 7, 40),
        utc(2026, 3, 9, 6),
    ]
    # wildcard: the missing hour simply has no runs
    assert runs("30 * * * *", NEW_YORK, utc(2026, 3, 8, 5), 3) == [
        utc(2026, 3, 8, 5, 30),
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 30),
    ]


def test_new_york_fall_back() -> None:
    start = utc(2026, 10, 31, 12)
    assert runs("30 1 * * *", NEW_YORK, start, 2) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert runs("30 2 * * *", NEW_YORK, start, 2) == [utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]
    assert runs("*/30 * * * *", NEW_YORK, utc(2026, 11, 1, 5), 4) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST
        utc(2026, 11, 1, 6, 30),  # 01:30 EST
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]


def test_berlin() -> None:
    assert runs("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]
    assert runs("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert runs("15 * * * *", BERLIN, utc(2026, 10, 25, 0), 3) == [
        utc(2026, 10, 25, 0, 15),
        utc(2026, 10, 25, 1, 15),
        utc(2026, 10, 25, 2, 15),
    ]


def test_a_zone_with_a_half_hour_shift() -> None:
    # Lord Howe moves by 30 minutes: 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05
    lord_howe = zoneinfo.ZoneInfo("Australia/Lord_Howe")
    spring = runs("15 2 * * *", lord_howe, dt.datetime(2026, 10, 3, 12, tzinfo=lord_howe), 1)
    assert spring[0].astimezone(lord_howe).replace(tzinfo=None) == dt.datetime(2026, 10, 4, 2, 30)
    autumn = runs("45 1 * * *", lord_howe, dt.datetime(2026, 4, 4, 12, tzinfo=lord_howe), 2)
    assert autumn[1] - autumn[0] == dt.timedelta(hours=24, minutes=30)


# against an independent minute-by-minute scan

CHANGES = [
    ("America/New_York", utc(2026, 3, 8, 7)),
    ("America/New_York", utc(2026, 11, 1, 6)),
    ("Europe/Berlin", utc(2026, 3, 29, 1)),
    ("Europe/Berlin", utc(2026, 10, 25, 1)),
    ("Australia/Sydney", utc(2026, 4, 4, 16)),
    ("Australia/Sydney", utc(2026, 10, 3, 16)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ("Asia/Kolkata", utc(2026, 6, 1)),
]
"""Zones with the instant of one of their clock changes (Kolkata has none: a control)."""


_NAMES = {
    name: number
    for names in (["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], ["", "JAN", "FEB", "MAR", "APR", "MAY", "JUN"])
    for number, name in enumerate(names)
    if name
}


def _expand(field: str, low: int, high: int) -> set[int]:
    """A field of the generated schedules as a set, written apart from the module under test."""
    values: set[int] = set()
    for item in field.split(","):
        body, _, step = item.partition("/")
        ends = [low, high] if body == "*" else [_NAMES[end] if end in _NAMES else int(end) for end in body.split("-")]
        values.update(range(ends[0], ends[-1] + 1, int(step or 1)))
    return values


def _matches(schedule: str, wall: dt.datetime) -> bool:
    """Whether the naive wall-clock minute `wall` is one of `schedule`'s (day fields OR-ed when both are set)."""
    minute, hour, day, month, weekday = schedule.split()
    in_month = wall.day in _expand(day, 1, 31)
    in_week = wall.isoweekday() % 7 in {value % 7 for value in _expand(weekday, 0, 7)}
    both = not day.startswith("*") and not weekday.startswith("*")
    return (
        wall.minute in _expand(minute, 0, 59)
        and wall.hour in _expand(hour, 0, 23)
        and wall.month in _expand(month, 1, 12)
        and (in_month or in_week if both else in_month and in_week)
    )


def _expected(schedule: str, tz: dt.tzinfo, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Walk every UTC minute and apply the documented rules, matching wall times with `_matches`."""
    minute, hour = schedule.split()[:2]
    fixed = "*" not in minute and "*" not in hour
    out: list[dt.datetime] = []
    when = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    previous_wall = (when - dt.timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    while when <= end:
        local = when.astimezone(tz)
        wall = local.replace(tzinfo=None)
        fire = _matches(schedule, wall)
        repeated = wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()
        if fire and fixed and repeated and local.fold == 1:
            fire = False
        if fixed and wall - previous_wall > dt.timedelta(minutes=1):
            skipped = previous_wall + dt.timedelta(minutes=1)
            while skipped < wall:
                fire = fire or _matches(schedule, skipped)
                skipped += dt.timedelta(minutes=1)
        if fire:
            out.append(when)
        previous_wall = wall
        when += dt.timedelta(minutes=1)
    return out


_minute = st.sampled_from(["*", "*/15", "*/7", "0", "30", "0,30", "10-20/5", "59"])
_hour = st.sampled_from(["*", "*/2", "1", "2", "3", "1-3", "2,3", "0-23/5"])
_day = st.sampled_from(["*", "*", "1", "4", "25", "1-7"])
_month = st.sampled_from(["*", "*", "4", "10", "3,10,11", "JAN-JUN"])
_weekday = st.sampled_from(["*", "*", "SUN", "1-5", "6"])


@given(
    minute=_minute,
    hour=_hour,
    day=_day,
    month=_month,
    weekday=_weekday,
    change=st.sampled_from(CHANGES),
    offset=st.integers(min_value=-4 * 60, max_value=30),
)
def test_next_after_agrees_with_a_minute_scan(
    minute: str, hour: str, day: str, month: str, weekday: str, change: tuple[str, dt.datetime], offset: int
) -> None:
    schedule = f"{minute} {hour} {day} {month} {weekday}"
    zone, instant = change
    tz = parse_time_zone(zone)
    start = instant + dt.timedelta(minutes=offset, seconds=17)
    end = start + dt.timedelta(hours=5)
    expected = _expected(schedule, tz, start, end)
    cron = CronSchedule.parse(schedule)
    found: list[dt.datetime] = []
    when: dt.datetime | None = start
    while True:
        assert when is not None
        when = cron.next_after(when, tz)
        if when is None or when > end:
            break
        found.append(when)
    assert found == expected
