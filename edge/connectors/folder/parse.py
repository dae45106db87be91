"""Reading one cycle log into samples: the column map of the machine file, units, decimal comma, time zones.

Pure functions (no I/O) so every rule is tested on bytes; a file that breaks a rule raises LogError with the
line and the column at fault, and nothing of it is taken."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from edge.config import SignalConfig
from edge.connectors.folder.config import FolderConfig, FolderSource
from edge.readings import Reading
from edge.values import coerce, describe

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FALSE_TEXTS = {"0", "false", "no", "off", "nok", "fail"}


class LogError(ValueError):
    """A cycle log that cannot be taken: what, and where (1-based line, column or key)."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        where = ", ".join(p for p in (f"line {line}" if line else "", f"column '{column}'" if column else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.line, self.column = line, column


@dataclass(frozen=True)
class Sample:
    """The readings of one row (csv) or of the whole printout (key_value), at the time it gives."""

    ts_ns: int
    readings: list[Reading]
    line: int


def number(text: str, cfg: FolderConfig) -> float:
    """A number as the machine writes it ('55,3' with a decimal comma); ValueError saying why not."""
    t = text.strip()
    if cfg.decimal == ",":
        if "." in t:
            raise ValueError(f"'{t}' has a '.' but this machine writes a decimal comma")
        t = t.replace(",", ".")
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"'{text.strip()}' is not a number") from None


def sample_time(text: str, cfg: FolderConfig) -> int:
    """A time cell in Unix ns, by time_format and the zone of times without an offset."""
    t = text.strip()
    if cfg.time_format in ("unix_s", "unix_ms"):
        value = number(t, cfg)
        return int(round(value * (1e9 if cfg.time_format == "unix_s" else 1e6)))
    try:
        dt = datetime.fromisoformat(t) if cfg.time_format == "iso" else datetime.strptime(t, cfg.time_format)
    except ValueError:
        want = "an ISO 8601 time" if cfg.time_format == "iso" else f"a time as '{cfg.time_format}'"
        raise ValueError(f"'{t}' is not {want}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(cfg.timezone))
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


def value(text: str, signal: SignalConfig, cfg: FolderConfig):
    """A cell as the signal's type and unit; ValueError saying why not."""
    src: FolderSource = signal.source
    t = text.strip()
    if signal.type == "str":
        return coerce("str", t)
    if signal.type == "bool":
        low = t.lower()
        if low in {v.lower() for v in src.true_values}:
            return True
        if low in FALSE_TEXTS:
            return False
        raise ValueError(f"'{t}' is neither one of {src.true_values} nor one of {sorted(FALSE_TEXTS)}")
    v = number(t, cfg)
    if src.scale != 1.0 or src.offset != 0.0:
        v = v * src.scale + src.offset
    return coerce(signal.type, v)


def parse(data: bytes, cfg: FolderConfig, signals: list[SignalConfig], *, now_ns: int) -> list[Sample]:
    """Every sample of a cycle log; LogError (line, column) for the first rule the file breaks."""
    try:
        text = data.decode(cfg.encoding)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LogError(f"byte 0x{data[e.start]:02x} is not {cfg.encoding} text", line=line) from None
    if "\x00" in text:
        raise LogError("the file holds NUL bytes: not a text log", line=text[:text.index("\x00")].count("\n") + 1)
    samples = _csv(text, cfg, signals) if cfg.format == "csv" else _key_value(text, cfg, signals)
    if not samples:
        raise LogError("no samples in the file")
    if len(samples) > cfg.max_rows:
        raise LogError(f"{len(samples)} samples, more than max_rows {cfg.max_rows}")
    limit = now_ns + int(cfg.max_future_skew_s * 1e9)
    for s in samples:
        if s.ts_ns > limit:
            raise LogError(f"time is {(s.ts_ns - now_ns) / 1e9:.0f} s in the future (clock or time zone wrong?)",
                           line=s.line, column=cfg.time_column)
    return samples


def _csv(text: str, cfg: FolderConfig, signals: list[SignalConfig]) -> list[Sample]:
    lines = text.splitlines()
    body = lines[cfg.skip_lines:]
    reader = csv.reader(io.StringIO("\n".join(body)), delimiter=cfg.delimiter, strict=True)
    first = cfg.skip_lines + 1
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise LogError("empty file: no header line", line=first) from None
    except csv.Error as e:
        raise LogError(f"not {cfg.delimiter!r}-separated text: {e}", line=first) from None
    index = {h: i for i, h in enumerate(header)}
    for name in [cfg.time_column, *(s.source.column for s in signals)]:
        if name not in index:
            raise LogError(f"not in the header (header: {', '.join(header)})", line=first, column=name)
    t_col = index[cfg.time_column]
    wanted = [(s, index[s.source.column]) for s in signals]
    samples: list[Sample] = []
    line = first
    try:
        for row in reader:
            line = first + reader.line_num - 1
            if not any(c.strip() for c in row):
                continue  # a blank line (often the last)
            if len(row) < len(header):
                raise LogError(f"{len(row)} cells for {len(header)} columns", line=line)
            if any(c.strip() for c in row[len(header):]):
                raise LogError(f"{len(row)} cells for {len(header)} columns", line=line)
            try:
                ts = sample_time(row[t_col], cfg)
            except ValueError as e:
                raise LogError(str(e), line=line, column=cfg.time_column) from None
            readings = []
            for sig, i in wanted:
                cell = row[i]
                if not cell.strip():
                    continue  # nothing measured in this row for this signal
                try:
                    readings.append(Reading(sig.name, value(cell, sig, cfg), ts))
                except ValueError as e:
                    raise LogError(str(e), line=line, column=sig.source.column) from None
            samples.append(Sample(ts, readings, line))
    except csv.Error as e:
        raise LogError(f"malformed CSV: {e}", line=line + 1) from None
    return samples


def _key_value(text: str, cfg: FolderConfig, signals: list[SignalConfig]) -> list[Sample]:
    found: dict[str, tuple[str, int]] = {}
    for n, raw in enumerate(text.splitlines()[cfg.skip_lines:], start=cfg.skip_lines + 1):
        if cfg.key_separator not in raw:
            continue  # a printout's rulers and titles
        key, _, val = raw.partition(cfg.key_separator)
        key = key.strip()
        if key in found:
            raise LogError(f"appears twice (first on line {found[key][1]})", line=n, column=key)
        found[key] = (val, n)
    if cfg.time_column not in found:
        raise LogError(f"no '{cfg.time_column}{cfg.key_separator}' line (keys: {', '.join(found) or 'none'})",
                       column=cfg.time_column)
    t_text, t_line = found[cfg.time_column]
    try:
        ts = sample_time(t_text, cfg)
    except ValueError as e:
        raise LogError(str(e), line=t_line, column=cfg.time_column) from None
    readings = []
    for sig in signals:
        if sig.source.column not in found:
            raise LogError(f"no such key in the printout (keys: {', '.join(found)})", column=sig.source.column)
        val, n = found[sig.source.column]
        if not val.strip():
            continue
        try:
            readings.append(Reading(sig.name, value(val, sig, cfg), ts))
        except ValueError as e:
            raise LogError(f"{e} (got {describe(val.strip())})", line=n, column=sig.source.column) from None
    return [Sample(ts, readings, t_line)]
