# What the BMS link asks of a family (smartbms.bms.link, docs/design.md "BMS drivers"): the
# GATT layout it looks for, the requests of a connection and of a poll, an assembler for its
# frames, decode(frame, reading) and the charge-MOSFET command. A family module subclasses
# Driver and sets what differs; the defaults are those of a family that answers each
# request (no stream, nothing to send on connect), decodes with its module's functions
# (decode = staticmethod(decode)) and has no charge-MOSFET command.


class Driver:
    name = None
    service_uuids = ()
    notify_service_uuid = None  # the notify characteristic's own service, when not the first
    notify_uuid = None
    write_uuid = None
    streams = False
    requests = ()  # one poll's requests
    new_assembler = None  # the family's Assembler class: new_assembler() makes one

    def start_requests(self):
        return ()

    def poll_requests(self):
        return self.requests

    def charge_fet_request(self, on):
        return None
