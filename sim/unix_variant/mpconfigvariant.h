// smartbms host variant of the unix port: the standard feature set, built 32-bit by
// scripts/host_micropython.sh, with the firmware and the host hardware shims frozen.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#include "variants/mpconfigvariant_common.h"

// The world link's watcher thread schedules IRQs; wake the main thread for them (host.c).
void smartbms_host_wake_main(void);
#define MICROPY_SCHED_HOOK_SCHEDULED smartbms_host_wake_main()
