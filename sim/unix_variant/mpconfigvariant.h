// smartbms host variant of the unix port: the standard feature set, built 32-bit by
// scripts/host_micropython.sh, with the firmware and the host hardware shims frozen.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#include "variants/mpconfigvariant_common.h"

// select.poll as the ESP32 has it: every pollable asked through its ioctl. The unix port's
// POSIX shortcut is not on the chip, and in v1.28.0 it corrupts the poll set when an
// asyncio loop waits on fds and ThreadSafeFlags together and the fd array has to move
// (aioble's flags + 11 connections crashed the device process).
#undef MICROPY_PY_SELECT_POSIX_OPTIMISATIONS
#define MICROPY_PY_SELECT_POSIX_OPTIMISATIONS (0)

// The world link's watcher thread schedules IRQs; wake the main thread for them (host.c).
void smartbms_host_wake_main(void);
#define MICROPY_SCHED_HOOK_SCHEDULED smartbms_host_wake_main()
