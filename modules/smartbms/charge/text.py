# Small helpers shared by the charge modules: numbers in reasons, extremes of a cell list.


def fmt(x):
    # "80" for whole numbers, "80.5" otherwise: reasons read like a person wrote them
    if x == int(x):
        return "%d" % x
    return "%.1f" % x


def max_of(values):
    """The largest value, skipping NaN (returns one of the list's own objects: no allocation)."""
    m = values[0]
    for v in values:
        if v > m or m != m:
            m = v
    return m


def min_of(values):
    m = values[0]
    for v in values:
        if v < m or m != m:
            m = v
    return m
