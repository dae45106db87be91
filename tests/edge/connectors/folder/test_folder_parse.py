"""Cycle-log parsing by the machine file: dialects, units, time zones, and refusals that name line and column."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from edge.config import MachineConfig, load_machine
from edge.connectors.folder.parse import LogError, parse
from edge.connectors.folder.simulator import cycle_rows, render

ROOT = Path(__file__).resolve().parents[4]
SAMPLE = ROOT / "configs" / "machines" / "washer-02.yaml"
NOW = 1_800_000_000 * 10**9  # 2027-01-15, after every sample below
HEADER = "Zeit;Phase;Temperatur Kammer [°C];Temperatur Doku [°C];A0;Druck Spülarm [bar];Leitwert [µS/cm]\r\n"


def washer(**conn) -> MachineConfig:
    data = yaml.safe_load(SAMPLE.read_text())
    data["connection"].update(conn)
    return MachineConfig.model_validate(data)


def take(text: str, m: MachineConfig | None = None):
    m = m or washer()
    return parse(text.encode(m.connection.encoding), m.connection, m.signals, now_ns=NOW)


def test_a_german_csv_is_read_with_decimal_comma_local_time_units_and_its_encoding():
    samples = take(HEADER + "15.01.2026 09:30:00;Desinfektion;93,2;92,8;3125;0,55;3,1\r\n")
    (s,) = samples
    # 09:30 in Berlin in winter is 08:30 UTC.
    assert s.ts_ns == 1_768_465_800 * 10**9
    got = {r.signal: r.value for r in s.readings}
    assert got == {"phase": "Desinfektion", "chamber_temp_c": 93.2, "disinfection_temp_c": 92.8, "a0_s": 3125.0,
                   "spray_pressure_kpa": pytest.approx(55.0), "conductivity_us_cm": 3.1}
    assert all(r.source_ts_ns == s.ts_ns for r in s.readings)


def test_summer_time_and_an_explicit_offset_are_honoured():
    (summer,) = take(HEADER + "15.07.2026 09:30:00;Trocknen;80,0;79,5;0;0,00;2,0\r\n")
    assert summer.ts_ns == 1_784_100_600 * 10**9  # 07:30 UTC (CEST = UTC+2)
    m = washer(time_format="iso", delimiter=";")
    (iso,) = take(HEADER + "2026-07-15T09:30:00.250+02:00;Trocknen;80,0;79,5;0;0,00;2,0\r\n", m)
    assert iso.ts_ns == 1_784_100_600 * 10**9 + 250_000_000


def test_the_simulators_logs_parse_completely():
    m = washer()
    data = render(m, cycle_rows(NOW - 10**9))
    samples = parse(data, m.connection, m.signals, now_ns=NOW)
    assert len(samples) == len(cycle_rows(NOW - 10**9)) > 100
    assert all(len(s.readings) == 6 for s in samples)
    assert max(r.value for s in samples for r in s.readings if r.signal == "a0_s") >= 3000


@pytest.mark.parametrize("body, line, column, words", [
    ("15.01.2026 09:30:00;Reinigen;55,x;55,0;0;0,55;1500\r\n", 2, "Temperatur Kammer [°C]", "'55,x' is not a number"),
    ("15.01.2026 09:30:00;Reinigen;55.3;55,0;0;0,55;1500\r\n", 2, "Temperatur Kammer [°C]", "decimal comma"),
    ("15.01.2026 09:30:00;Reinigen;55,3;55,0;0;0,55;1500\r\n2026-01-15 09:30:10;Reinigen;55,3;55,0;0;0,55;1500\r\n",
     3, "Zeit", "is not a time as '%d.%m.%Y %H:%M:%S'"),
    ("15.01.2026 09:30:00;Reinigen;55,3;55,0\r\n", 2, None, "4 cells for 7 columns"),
    ("15.01.2028 09:30:00;Reinigen;55,3;55,0;0;0,55;1500\r\n", 2, "Zeit", "in the future"),
])
def test_a_bad_cell_refuses_the_whole_file_naming_line_and_column(body, line, column, words):
    with pytest.raises(LogError) as caught:
        take(HEADER + body)
    e = caught.value
    assert (e.line, e.column) == (line, column) and words in str(e)
    assert str(e).startswith(f"line {line}")


def test_a_missing_column_names_the_header_it_found():
    with pytest.raises(LogError, match=r"line 1, column 'A0': not in the header \(header: Zeit, Phase"):
        take(HEADER.replace(";A0;", ";A0 Wert;") + "15.01.2026 09:30:00;Reinigen;55,3;55,0;0;0,55;1500\r\n")


def test_hostile_bytes_are_refused_with_where_not_guessed_around():
    m = washer(encoding="utf-8")
    with pytest.raises(LogError, match=r"line 2: byte 0xff is not utf-8 text"):
        parse(b"Zeit;Phase\n\xff\xfe;x\n", m.connection, m.signals, now_ns=NOW)
    with pytest.raises(LogError, match="NUL bytes"):
        parse(b"Zeit;Phase\n\x00\x00", m.connection, m.signals, now_ns=NOW)
    with pytest.raises(LogError, match="no samples"):
        take(HEADER)
    with pytest.raises(LogError, match="empty file"):
        take("")
    huge = HEADER + "15.01.2026 09:30:00;" + "R" * 200_000 + ";55,3;55,0;0;0,55;1500\r\n"
    with pytest.raises(LogError, match="line 2: malformed CSV: field larger than field limit"):
        take(huge)


def test_a_key_value_printout_is_one_sample():
    data = yaml.safe_load(SAMPLE.read_text())
    data["connection"].update(format="key_value", time_column="Ende", key_separator=":")
    data["signals"] = [s for s in data["signals"] if s["name"] in ("phase", "a0_s")]
    m = MachineConfig.model_validate(data)
    printout = ("=== PG 8536  Charge 4471 ===\nEnde: 15.01.2026 09:42:10\nPhase: Trocknen\nA0: 3125\n"
                "--------------------------\n")
    (s,) = take(printout, m)
    assert {r.signal: r.value for r in s.readings} == {"phase": "Trocknen", "a0_s": 3125.0}
    with pytest.raises(LogError, match="line 4, column 'A0': '3,1,2' is not a number"):
        take(printout.replace("A0: 3125", "A0: 3,1,2"), m)
    with pytest.raises(LogError, match="column 'Phase': appears twice"):
        take(printout + "Phase: Fertig\n", m)


def test_the_sample_file_is_valid():
    m = load_machine(SAMPLE)
    assert m.connection.type == "folder" and all(s.source.type == "folder" for s in m.signals)
