"""GS1 UDI syntax: GTIN-14 check digit, AIs (01) (11) (17) (10) (21), human-readable and element-string forms."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

GS = "\x1d"  # FNC1 in the transmitted data: ends a variable-length field that is not last
CSET82 = re.compile(r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$")
AI_NAMES = {"01": "GTIN", "11": "production date", "17": "expiration date", "10": "lot", "21": "serial"}
FIXED = {"01": 14, "11": 6, "17": 6}
VARIABLE = ("10", "21")


class UdiError(ValueError):
    """A UDI string or field that breaks the GS1 rules; the message says which rule."""


def gtin_check_digit(body: str) -> int:
    """Check digit for the digits before it: weights 3,1,3,… from the rightmost digit (GS1 GenSpecs 7.9.1)."""
    if not body.isdigit():
        raise UdiError("a GTIN has digits only")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def validate_gtin(gtin: str) -> str | None:
    """None when gtin is a valid GTIN-14, else what is wrong with it."""
    if len(gtin) != 14 or not gtin.isdigit():
        return f"GTIN {gtin!r} must be 14 digits"
    expected = gtin_check_digit(gtin[:-1])
    if int(gtin[-1]) != expected:
        return f"GTIN {gtin} has check digit {gtin[-1]}, expected {expected}"
    return None


def gtin14(gtin: str) -> str:
    """A GTIN-8/12/13/14 padded to 14 digits with leading zeros."""
    if len(gtin) not in (8, 12, 13, 14) or not gtin.isdigit():
        raise UdiError(f"GTIN {gtin!r} must have 8, 12, 13 or 14 digits")
    return gtin.zfill(14)


def _yymmdd(value: date) -> str:
    return value.strftime("%y%m%d")


def _parse_date(ai: str, text: str, today: date | None = None) -> date:
    if not (len(text) == 6 and text.isdigit()):
        raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} must be YYMMDD, got {text!r}")
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    # GS1 GenSpecs 7.12: the century is the one that puts the year within -49..+50 of this year.
    this_year = (today or date.today()).year
    diff = yy - this_year % 100
    century = this_year // 100 + (-1 if diff > 50 else 1 if diff < -49 else 0)
    year = century * 100 + yy
    if not 1 <= mm <= 12:
        raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} has month {mm:02d}")
    last = calendar.monthrange(year, mm)[1]
    if dd == 0:  # day 00: the last day of the month
        dd = last
    if dd > last:
        raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} has day {dd:02d}, month {mm:02d} has {last} days")
    return date(year, mm, dd)


@dataclass(frozen=True)
class Udi:
    """A UDI: device identifier (GTIN) plus production identifiers."""

    gtin: str
    production_date: date | None = None
    expiry_date: date | None = None
    lot: str | None = None
    serial: str | None = None

    def __post_init__(self):
        problem = validate_gtin(self.gtin)
        if problem:
            raise UdiError(problem)
        for ai, value in (("10", self.lot), ("21", self.serial)):
            if value is not None and not CSET82.match(value):
                raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} must be 1 to 20 characters of GS1 set 82, got {value!r}")
        if self.lot is None and self.serial is None:
            raise UdiError("a UDI production identifier needs a lot (10) or a serial (21)")

    def fields(self) -> list[tuple[str, str]]:
        """(AI, value) pairs in GS1 order: fixed-length fields first, then variable-length ones."""
        out = [("01", self.gtin)]
        if self.production_date:
            out.append(("11", _yymmdd(self.production_date)))
        if self.expiry_date:
            out.append(("17", _yymmdd(self.expiry_date)))
        if self.lot is not None:
            out.append(("10", self.lot))
        if self.serial is not None:
            out.append(("21", self.serial))
        return out

    def human_readable(self) -> str:
        """HRI form, e.g. (01)09506000134352(11)261126(10)J42(21)AMT-2026-000001."""
        return "".join(f"({ai}){v}" for ai, v in self.fields())

    def element_string(self) -> str:
        """Element string as carried in the barcode, a GS after each variable-length field that is not last."""
        parts = self.fields()
        out = []
        for i, (ai, v) in enumerate(parts):
            out.append(ai + v)
            if ai in VARIABLE and i < len(parts) - 1:
                out.append(GS)
        return "".join(out)


def _build(values: dict[str, str], today: date | None) -> Udi:
    if "01" not in values:
        raise UdiError("AI (01) GTIN is missing")
    return Udi(gtin=values["01"],
               production_date=_parse_date("11", values["11"], today) if "11" in values else None,
               expiry_date=_parse_date("17", values["17"], today) if "17" in values else None,
               lot=values.get("10"), serial=values.get("21"))


def parse(text: str, today: date | None = None) -> Udi:
    """Parse a UDI in HRI form '(01)…' or element-string form '01…' (GS or '|' as separator); validate it."""
    text = text.strip()
    for prefix in ("]C1", "]d2", "]Q3", "]e0"):  # symbology identifiers sent by scanners
        if text.startswith(prefix):
            text = text[len(prefix):]
    values: dict[str, str] = {}

    def put(ai: str, value: str) -> None:
        if ai not in AI_NAMES:
            raise UdiError(f"AI ({ai}) is not supported in a device UDI here")
        if ai in values:
            raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} appears twice")
        if ai in FIXED and len(value) != FIXED[ai]:
            raise UdiError(f"AI ({ai}) {AI_NAMES[ai]} must have {FIXED[ai]} characters, got {len(value)}")
        values[ai] = value

    if text.startswith("("):
        matches = list(re.finditer(r"\((\d{2})\)([^()]*)", text))
        if not matches or "".join(m.group(0) for m in matches) != text:
            raise UdiError("human-readable UDI must be a sequence of (AI)value")
        for m in matches:
            put(m.group(1), m.group(2))
        return _build(values, today)
    text = text.replace("|", GS)
    i = 0
    while i < len(text):
        if text[i] == GS:
            i += 1
            continue
        ai = text[i:i + 2]
        i += 2
        if ai in FIXED:
            put(ai, text[i:i + FIXED[ai]])
            i += FIXED[ai]
        elif ai in VARIABLE:
            end = text.find(GS, i)
            end = len(text) if end < 0 else end
            put(ai, text[i:end])
            i = end
        else:
            raise UdiError(f"AI ({ai}) is not supported in a device UDI here")
    return _build(values, today)
