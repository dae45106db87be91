"""Process physics for simulated machines: what a real furnace, washer, steam sterilizer and SLA printer
would report at time t into their cycle. Pure functions of time (noise is added by the caller), so a
simulation is reproducible and time can be compressed at will.

Values are keyed by the signal names of the sample machine files (configs/machines/*.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass

Value = float | int | bool | str

# IAPWS-IF97, region 4 (saturation line), coefficients n1..n10 (IAPWS R7-97(2012), table 34).
_N = (
    0.11670521452767e4, -0.72421316703206e6, -0.17073846940092e2, 0.12020824702470e5, -0.32325550322333e7,
    0.14915108613530e2, -0.48232657361591e4, 0.40511340542057e6, -0.23855557567849e0, 0.65017534844798e3,
)
ATMOSPHERE_KPA = 101.325


def saturation_pressure_kpa(t_c: float) -> float:
    """Pressure of saturated steam at t_c (°C), in kPa absolute (IAPWS-IF97 eq. 30; 0.01..373.9 °C)."""
    if not 0.01 <= t_c <= 373.946:
        raise ValueError(f"saturation pressure is defined from 0.01 to 373.946 °C, not {t_c} °C")
    n1, n2, n3, n4, n5, n6, n7, n8, n9, n10 = _N
    t = t_c + 273.15
    theta = t + n9 / (t - n10)
    a = theta * theta + n1 * theta + n2
    b = n3 * theta * theta + n4 * theta + n5
    c = n6 * theta * theta + n7 * theta + n8
    p_mpa = (2 * c / (-b + math.sqrt(b * b - 4 * a * c))) ** 4
    return p_mpa * 1000.0


def saturation_temperature_c(p_kpa: float) -> float:
    """Temperature of saturated steam at p_kpa absolute, in °C (IAPWS-IF97 eq. 31, the backward equation)."""
    if not 0.611213 <= p_kpa <= 22064.0:
        raise ValueError(f"saturation temperature is defined from 0.611 to 22064 kPa, not {p_kpa} kPa")
    n1, n2, n3, n4, n5, n6, n7, n8, n9, n10 = _N
    beta = (p_kpa / 1000.0) ** 0.25
    e = beta * beta + n3 * beta + n6
    f = n1 * beta * beta + n4 * beta + n7
    g = n2 * beta * beta + n5 * beta + n8
    d = 2 * g / (-f - math.sqrt(f * f - 4 * e * g))
    return (n10 + d - math.sqrt((n10 + d) ** 2 - 4 * (n9 + n10 * d))) / 2 - 273.15


def _lerp(a: float, b: float, x: float) -> float:
    return a + (b - a) * min(1.0, max(0.0, x))


def _toward(start: float, end: float, elapsed: float, tau: float) -> float:
    """First-order approach from start to end after elapsed seconds with time constant tau."""
    return end + (start - end) * math.exp(-elapsed / tau)


def _phase_at(phases: list[tuple[str, float]], t: float) -> tuple[int, str, float, float]:
    """(index, name, seconds into the phase, phase duration) of the phase running at t."""
    start = 0.0
    for i, (name, dur) in enumerate(phases):
        if t < start + dur or i == len(phases) - 1:
            return i, name, t - start, dur
        start += dur
    raise AssertionError("unreachable")


@dataclass
class SterilizerCycle:
    """A fractionated-prevacuum steam cycle (EN 285 / EN 13060 type B): 3 vacuum pulses, heat-up,
    plateau, exhaust, vacuum drying, aeration. Wherever the chamber holds saturated steam (pulses,
    heat-up, plateau, exhaust) its pressure is the saturation pressure at the chamber temperature."""

    plateau_c: float = 134.0
    plateau_s: float = 210.0  # 3.5 min: the usual 134 °C hold for wrapped instruments
    program: str = "134C-3.5min"
    pulses: int = 3
    vacuum_kpa: float = 8.0  # bottom of each prevacuum pulse
    pulse_top_kpa: float = 150.0  # top of each steam pulse
    drying_s: float = 600.0
    idle_s: float = 60.0
    first_cycle: int = 1200
    pulse_down_s: float = 75.0
    pulse_up_s: float = 45.0
    heat_up_s: float = 150.0
    exhaust_s: float = 60.0
    aeration_s: float = 60.0

    def phases(self) -> list[tuple[str, float]]:
        """(phase, duration s) in order; prevacuum pulses are split into down/up halves."""
        out = [("idle", self.idle_s)]
        for _ in range(self.pulses):
            out += [("prevacuum_down", self.pulse_down_s), ("prevacuum_up", self.pulse_up_s)]
        out += [("heat_up", self.heat_up_s), ("plateau", self.plateau_s), ("exhaust", self.exhaust_s),
                ("drying", self.drying_s), ("aeration", self.aeration_s), ("end", 30.0)]
        return out

    @property
    def period_s(self) -> float:
        """Length of one cycle including the idle time before it."""
        return sum(d for _, d in self.phases())

    def chamber(self, t: float) -> tuple[str, float, float]:
        """(phase, chamber temperature °C, chamber pressure kPa abs) at t seconds into the cycle."""
        t = t % self.period_s
        phases = self.phases()
        i, name, x, dur = _phase_at(phases, t)
        tsat = saturation_temperature_c
        pulse_top_t = tsat(self.pulse_top_kpa)
        if name == "idle":
            return "idle", 90.0, ATMOSPHERE_KPA  # air at atmospheric pressure, walls kept hot by the jacket
        if name == "prevacuum_down":
            first = i == 1
            start = ATMOSPHERE_KPA if first else self.pulse_top_kpa
            p = _toward(start, self.vacuum_kpa * 0.9, x, 18.0)
            p = max(p, self.vacuum_kpa)
            # Air first: the chamber cools slowly; later pulses hold steam, which flashes at Tsat.
            temp = _toward(90.0, 70.0, x, 200.0) if first else tsat(p)
            return "prevacuum", temp, p
        if name == "prevacuum_up":
            p = _lerp(self.vacuum_kpa, self.pulse_top_kpa, x / dur)
            return "prevacuum", tsat(p), p
        if name == "heat_up":
            # Steam admitted until the plateau temperature; slower at the end as the load absorbs heat.
            temp = pulse_top_t + (self.plateau_c + 0.4 - pulse_top_t) * (1 - math.exp(-3.2 * x / dur)) / (
                1 - math.exp(-3.2))
            return "heat_up", temp, saturation_pressure_kpa(temp)
        if name == "plateau":
            # The controller holds 0.3..0.7 K above the set temperature, oscillating with the steam valve.
            temp = self.plateau_c + 0.5 + 0.2 * math.sin(2 * math.pi * x / 40.0)
            return "plateau", temp, saturation_pressure_kpa(temp)
        plateau_end = self.plateau_c + 0.5
        if name == "exhaust":
            p = _toward(saturation_pressure_kpa(plateau_end), 20.0, x, 15.0)
            return "exhaust", tsat(p), p
        if name == "drying":
            p = _toward(20.0, 6.0, x, 30.0)
            # Vacuum drying: the hot jacket re-heats the now steam-free chamber.
            return "drying", _toward(tsat(20.0), 95.0, x, 200.0), p
        if name == "aeration":
            p = _lerp(6.0, ATMOSPHERE_KPA, x / dur)
            dried = _toward(tsat(20.0), 95.0, self.drying_s, 200.0)
            return "aeration", _toward(dried, 90.0, x, 30.0), p
        return "end", 90.0, ATMOSPHERE_KPA

    def state(self, t: float) -> dict[str, Value]:
        """Every sterilizer signal at t seconds since the first cycle started."""
        phase, temp, p = self.chamber(t)
        # Probes in the load lag the chamber (heat must get into the pack); the drain lags a little.
        _, load_1, _ = self.chamber(max(0.0, t - 12.0))
        _, load_2, _ = self.chamber(max(0.0, t - 6.0))
        _, drain, _ = self.chamber(max(0.0, t - 3.0))
        return {
            "phase": phase,
            "program": self.program,
            "cycle_number": self.first_cycle + int(t // self.period_s),
            "chamber_temp_c": temp,
            "chamber_pressure_kpa": p,
            "jacket_pressure_kpa": saturation_pressure_kpa(self.plateau_c + 1.0),  # jacket steam, always on
            "load_temp_1_c": min(load_1, temp) - 0.3,
            "load_temp_2_c": min(load_2, temp) - 0.1,
            "drain_temp_c": drain - 0.2,
            "door_locked": phase not in ("idle", "end"),
        }


@dataclass
class FurnaceCycle:
    """Vacuum stress relief of Ti-6Al-4V: pump-down, 10 K/min ramp, 2 h hold at 800 °C, argon cooling."""

    hold_c: float = 800.0
    hold_s: float = 7200.0
    ramp_k_per_min: float = 10.0
    ambient_c: float = 25.0
    unload_c: float = 80.0
    cool_tau_s: float = 2400.0
    program: str = "TI64-SR-800C-2H"
    zone_offsets: tuple[float, float, float] = (-1.5, 0.8, 0.3)
    idle_s: float = 60.0
    pump_down_s: float = 600.0
    done_s: float = 300.0
    zone_lag_s: float = 60.0  # the zone thermocouples follow the heating elements
    load_lag_s: float = 420.0  # the plate lags the heating elements by minutes

    def phases(self) -> list[tuple[str, float]]:
        """(step name, duration s) in order."""
        ramp_s = (self.hold_c - self.ambient_c) / self.ramp_k_per_min * 60.0
        cool_s = self.cool_tau_s * math.log((self.hold_c - self.ambient_c) / (self.unload_c - self.ambient_c))
        return [("idle", self.idle_s), ("pump_down", self.pump_down_s), ("ramp", ramp_s), ("hold", self.hold_s),
                ("argon_cool", cool_s), ("done", self.done_s)]

    @property
    def period_s(self) -> float:
        """Length of one program."""
        return sum(d for _, d in self.phases())

    def _furnace_c(self, t: float) -> tuple[int, str, float, float, float]:
        """(step, name, x, furnace temperature, setpoint) at t."""
        t = t % self.period_s
        step, name, x, dur = _phase_at(self.phases(), max(0.0, t))
        if name in ("idle", "pump_down"):
            return step, name, x, self.ambient_c, self.ambient_c
        if name == "ramp":
            sp = self.ambient_c + self.ramp_k_per_min * x / 60.0
            return step, name, x, sp, sp
        if name == "hold":
            return step, name, x, self.hold_c, self.hold_c
        if name == "argon_cool":
            return step, name, x, _toward(self.hold_c, self.ambient_c, x, self.cool_tau_s), self.ambient_c
        return step, name, x, _toward(self.unload_c, self.ambient_c, x, 900.0), self.ambient_c

    def state(self, t: float) -> dict[str, Value]:
        """Every furnace signal at t seconds since the first program started."""
        step, name, x, _, sp = self._furnace_c(t)
        zones = [self._furnace_c(max(0.0, t - self.zone_lag_s))[3] + off for off in self.zone_offsets]
        load = self._furnace_c(max(0.0, t - self.load_lag_s))[3]
        if name == "idle":
            pressure = 1013.0
        elif name == "pump_down":
            pressure = max(1e-4, 1013.0 * math.exp(-x / 25.0))
        elif name in ("ramp", "hold"):
            pressure = 1e-4 * (1 + 0.5 * math.sin(t / 300.0) ** 2)  # outgassing while hot
        elif name == "argon_cool":
            pressure = _lerp(1e-4, 900.0, x / 60.0)
        else:
            pressure = _lerp(900.0, 1013.0, x / 120.0)
        return {
            "program_name": self.program,
            "program_step": step,
            "setpoint_c": sp,
            "zone_1_temp_c": zones[0],
            "zone_2_temp_c": zones[1],
            "zone_3_temp_c": zones[2],
            "load_temp_c": load,
            "chamber_pressure_mbar": pressure,
            "argon_flow_l_min": 40.0 if name == "argon_cool" else 0.0,
            # Residual O2 in the retort (ppm): air when open, traces under vacuum and argon 5.0.
            "oxygen_ppm": 209_000.0 if name == "idle" else (2.0 if name != "pump_down" else
                                                            max(2.0, 209_000.0 * math.exp(-x / 25.0))),
        }


@dataclass
class WasherCycle:
    """Ultrasonic cleaning: fill, heat to 55 °C, ultrasonic wash with alkaline detergent, two rinses,
    final rinse in purified water, hot-air drying."""

    wash_c: float = 55.0
    wash_s: float = 600.0
    power_w: float = 600.0
    frequency_khz: float = 37.0
    program: str = "TI-IMPLANT-55C"
    fill_s: float = 60.0
    heat_s: float = 300.0
    rinse_s: float = 120.0
    final_rinse_s: float = 180.0
    dry_s: float = 600.0
    final_rinse_tau_s: float = 25.0  # how fast purified water carries the conductivity down in the final rinse

    def phases(self) -> list[tuple[str, float]]:
        """(step, duration s) in order."""
        return [("idle", 30.0), ("fill", self.fill_s), ("heat", self.heat_s), ("ultrasonic_wash", self.wash_s),
                ("rinse_1", self.rinse_s), ("rinse_2", self.rinse_s), ("final_rinse", self.final_rinse_s),
                ("dry", self.dry_s), ("done", 30.0)]

    @property
    def period_s(self) -> float:
        """Length of one program."""
        return sum(d for _, d in self.phases())

    def state(self, t: float) -> dict[str, Value]:
        """Every washer signal at t seconds since the first program started."""
        t %= self.period_s
        _, step, x, dur = _phase_at(self.phases(), t)
        program_s = self.period_s - 30.0  # idle is not part of the program
        elapsed = max(0.0, t - 30.0)
        temp = {
            "idle": 22.0, "fill": 22.0,
            "heat": _lerp(22.0, self.wash_c, x / dur),
            "ultrasonic_wash": self.wash_c + 0.3 * math.sin(x / 30.0),
            "rinse_1": _toward(self.wash_c, 35.0, x, 40.0),
            "rinse_2": _toward(35.0, 25.0, x, 40.0),
            "final_rinse": _toward(25.0, 22.0, x, 40.0),
            "dry": 22.0, "done": 22.0,
        }[step]
        conductivity = {
            "idle": 1.2, "fill": _lerp(1.2, 1500.0, x / dur), "heat": 1500.0, "ultrasonic_wash": 1500.0,
            "rinse_1": _toward(1500.0, 420.0, x, 20.0),  # tap water
            "rinse_2": _toward(420.0, 12.0, x, 20.0),  # purified water, first pass
            "final_rinse": _toward(12.0, 1.8, x, self.final_rinse_tau_s),  # purified water: must end under 5 µS/cm
            "dry": 1.8, "done": 1.8,
        }[step]
        return {
            "program": self.program,
            "step": step,
            "elapsed_s": int(elapsed),
            "remaining_s": int(max(0.0, program_s - elapsed)) if step != "idle" else int(program_s),
            "bath_temp_c": temp,
            "ultrasonic_power_w": self.power_w + 8.0 * math.sin(x / 7.0) if step == "ultrasonic_wash" else 0.0,
            "ultrasonic_frequency_khz": self.frequency_khz,
            "conductivity_us_cm": conductivity,
            "bath_level_ok": step not in ("idle", "dry", "done"),
        }


@dataclass
class SlaPrint:
    """A resin print: resin heat-up, then per layer an exposure (laser on) and a peel (force on the film)."""

    layer_count: int = 1200
    layer_mm: float = 0.05
    expose_s: float = 5.5
    peel_s: float = 3.5
    resin_c: float = 31.0
    standby_resin_c: float = 30.0
    laser_mw: float = 250.0
    cartridge_lot: str = "BMG-2411-0347"

    def phases(self) -> list[tuple[str, float]]:
        """(state, duration s) in order."""
        return [("idle", 60.0), ("preparing", 300.0),
                ("printing", self.layer_count * (self.expose_s + self.peel_s)), ("finished", 300.0)]

    @property
    def period_s(self) -> float:
        """Length of one job including idle and preparation."""
        return sum(d for _, d in self.phases())

    def cross_section(self, layer: int) -> float:
        """Relative cross-section of a layer (a surgical guide: wide base, narrower body, thin tubes)."""
        z = layer / self.layer_count
        return 0.35 + 0.55 * math.exp(-((z - 0.2) / 0.15) ** 2) + 0.1 * math.sin(layer / 9.0) ** 2

    def state(self, t: float) -> dict[str, Value]:
        """Every SLA signal at t seconds since the first job started."""
        job = int(t // self.period_s)
        t %= self.period_s
        _, name, x, dur = _phase_at(self.phases(), t)
        layer, laser, force = 0, 0.0, 0.0
        if name == "printing":
            per = self.expose_s + self.peel_s
            layer = min(self.layer_count, int(x // per) + 1)
            within = x - (layer - 1) * per
            if within < self.expose_s:
                laser = self.laser_mw
            else:
                # Peel: force rises as the film lets go, peaking mid-peel; proportional to the cross-section.
                force = 38.0 * self.cross_section(layer) * math.sin(math.pi * (within - self.expose_s) / self.peel_s)
        elif name == "finished":
            layer = self.layer_count
        # The tank heater keeps the resin near temperature in standby; preparing brings it exactly there.
        resin = _lerp(self.standby_resin_c, self.resin_c, x / dur) if name == "preparing" else (
            self.resin_c if name in ("printing", "finished") else self.standby_resin_c)
        if name == "printing":
            resin += 0.25 * math.sin(t / 45.0)  # heater cycling
        # The cartridge refills the tank between 6 and 8 mm; each layer takes a little resin.
        used = layer * 0.004 * (1 if name != "idle" else 0)
        vat = 8.0 - (used % 2.0)
        return {
            "printer_state": name,
            "layer": layer,
            "layer_count": self.layer_count,
            "z_mm": layer * self.layer_mm,
            "resin_temp_c": resin,
            "vat_level_mm": vat,
            "uv_power_mw": laser,
            "peel_force_n": max(0.0, force),
            "resin_cartridge_lot": self.cartridge_lot if job % 3 != 2 else "BMG-2411-0352",
        }


# Measurement noise (1 sigma) of each signal's sensor; absent = exact (counters, states, setpoints).
NOISE = {
    "chamber_temp_c": 0.05, "load_temp_1_c": 0.05, "load_temp_2_c": 0.05, "drain_temp_c": 0.1,
    "chamber_pressure_kpa": 0.15, "jacket_pressure_kpa": 0.3,
    "zone_1_temp_c": 0.4, "zone_2_temp_c": 0.4, "zone_3_temp_c": 0.4, "load_temp_c": 0.5,
    "argon_flow_l_min": 0.2, "bath_temp_c": 0.1, "ultrasonic_power_w": 3.0, "conductivity_us_cm": 0.05,
    "resin_temp_c": 0.05, "vat_level_mm": 0.02, "uv_power_mw": 0.8, "peel_force_n": 0.3,
}


def profile_for(kind: str):
    """The process profile simulating a machine kind, or None when there is none."""
    return {
        "steam_sterilizer": SterilizerCycle,
        "furnace": FurnaceCycle,
        "washer": WasherCycle,
        "ultrasonic_cleaner": WasherCycle,
        "sla_printer": SlaPrint,
        "dlp_printer": SlaPrint,
    }.get(kind, lambda: None)()
