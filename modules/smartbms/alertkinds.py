# Which event-log entries are alerts: an alarm, a fault, a charge timeout, lost BMS data, a
# completed full charge, an OTA result. Pure; read by the alert sender (smartbms.alerts) and,
# for its <base>/events topic, by the MQTT client.


def kind_of(kind, msg, last_state):
    """The alert kind of an event-log entry, or None. last_state: the charger state before this
    entry (a "resting" after charging/balancing is a completed full charge)."""
    if kind == "fault":
        if msg.startswith("alarm "):
            return None if msg.endswith(" ended") else "alarm"
        return None if msg.startswith("alarms cleared") else "fault"
    if kind == "charge":
        if msg.startswith("timeout:"):
            return "timeout"
        if msg.startswith("no_data:") and last_state not in (None, "startup", "no_data"):
            return "no_data"
        if msg.startswith("resting:") and last_state in ("charging", "balancing"):
            return "full"
        return None
    if kind == "ota":
        return "ota"
    return None


def pick(kind, msg, last_state):
    """(the charger state after this entry, its alert kind or None): the state a "charge"
    entry names is what the next entry's kind depends on."""
    state = msg.split(":", 1)[0] if kind == "charge" and ":" in msg else last_state
    return state, kind_of(kind, msg, last_state)
