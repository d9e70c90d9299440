# BMS frame codecs (pure: no hardware imports). `protocols.get(name)` returns a driver;
# `reading.Reading` is what a decoded frame fills; `reading.BMSError` is the only error
# a codec raises.
