# The decoded state of a battery, shared by every codec, the BLE link and the controller.


class BMSError(ValueError):
    """The one error a codec raises: a frame that is corrupt, truncated or reports an error."""


# Stable names for protection/alarm bits (docs/design.md); codecs may add family-specific ones.
CELL_OVERVOLTAGE = "cell_overvoltage"
CELL_UNDERVOLTAGE = "cell_undervoltage"
PACK_OVERVOLTAGE = "pack_overvoltage"
PACK_UNDERVOLTAGE = "pack_undervoltage"
CHARGE_OVERTEMP = "charge_overtemp"
CHARGE_UNDERTEMP = "charge_undertemp"
DISCHARGE_OVERTEMP = "discharge_overtemp"
DISCHARGE_UNDERTEMP = "discharge_undertemp"
CHARGE_OVERCURRENT = "charge_overcurrent"
DISCHARGE_OVERCURRENT = "discharge_overcurrent"
SHORT_CIRCUIT = "short_circuit"
AFE_ERROR = "afe_error"
MOSFET_LOCK = "mosfet_lock"
MOSFET_OVERTEMP = "mosfet_overtemp"

# The faults that must stop charging.
CHARGE_FAULTS = (
    CELL_OVERVOLTAGE,
    PACK_OVERVOLTAGE,
    CHARGE_OVERTEMP,
    CHARGE_UNDERTEMP,
    CHARGE_OVERCURRENT,
    SHORT_CIRCUIT,
    AFE_ERROR,
    MOSFET_LOCK,
    MOSFET_OVERTEMP,  # charging through overheated switches makes them hotter
)

# Family alarms that say the BMS's own measurements (or its switches) cannot be trusted: a
# pack it reports on must not be charged until they clear. Bits a codec cannot name
# (UNKNOWN_PREFIXES) count too: an alarm nobody can explain is no reason to trust the pack.
UNTRUSTED_FAULTS = (
    "current_sensor_error",  # JK, Daly: the current (tail end, supervision) is unknown
    "cell_count_mismatch",  # JK: it sees another number of cells than configured
    "wire_resistance",  # JK: a balance lead is loose, cell voltages are wrong
    "cell_sense_error", "voltage_sense_error", "temp_sensor_error", "mos_sensor_error",  # Daly
    "eeprom_error", "comm_error", "internal_comm_error", "mosfet_stuck", "charge_lockout",
    "seplos_aerosol_alarm",  # Seplos: its fire-suppression aerosol alarm went off
)
UNKNOWN_PREFIXES = ("jbd_protection_bit_", "daly_alarm_", "ant_protection_bit_", "redodo_protection_bit_",
                    "redodo_failure_bit_", "renogy_alarm_")


def untrusted(name):
    """True for a fault name that means the BMS itself cannot be trusted."""
    if name in UNTRUSTED_FAULTS:
        return True
    for p in UNKNOWN_PREFIXES:
        if name.startswith(p):
            return True
    return False


FIELDS = (
    "voltage",
    "current",
    "soc",
    "remaining_ah",
    "nominal_ah",
    "cycles",
    "cells",
    "temperatures",
    "charge_fet",
    "discharge_fet",
    "faults",
)


class Reading:
    """One battery state. Units: V, A (+ = charging), %, Ah, degC; None = not reported.

    A poller reuses one object: codecs overwrite the fields a frame carries and leave the
    others alone (a JBD cells frame sets only `cells`), `clear()` forgets everything.
    """

    __slots__ = FIELDS + ("received",)

    def __init__(self):
        self.clear()

    def clear(self):
        self.voltage = None
        self.current = None
        self.soc = None
        self.remaining_ah = None
        self.nominal_ah = None
        self.cycles = None
        self.cells = []
        self.temperatures = []
        self.charge_fet = None
        self.discharge_fet = None
        self.faults = []
        self.received = None

    def to_dict(self):
        return {
            "voltage": self.voltage,
            "current": self.current,
            "soc": self.soc,
            "remaining_ah": self.remaining_ah,
            "nominal_ah": self.nominal_ah,
            "cycles": self.cycles,
            "cells": list(self.cells),
            "temperatures": list(self.temperatures),
            "charge_fet": self.charge_fet,
            "discharge_fet": self.discharge_fet,
            "faults": list(self.faults),
        }

    def charge_blocked(self):
        """True when a reported fault must stop charging."""
        for f in self.faults:
            if f in CHARGE_FAULTS:
                return True
        return False

    def __repr__(self):
        return "Reading(%r)" % (self.to_dict(),)


def sized(lst, count):
    """Make list `lst` exactly `count` long (new slots 0) and return it: lets a decoder
    overwrite a reused Reading's list in place instead of building a new one."""
    if type(lst) is not list:
        lst = []
    while len(lst) > count:
        lst.pop()
    while len(lst) < count:
        lst.append(0)
    return lst
