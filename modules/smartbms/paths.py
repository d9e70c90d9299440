# Where the firmware keeps its files. On the device the littlefs "vfs" partition is
# mounted at "/" by the frozen _boot.py; the simulator mounts its simulated partition
# elsewhere and changes ROOT before the app starts.
ROOT = "/"


def path(name):
    return ROOT + name
