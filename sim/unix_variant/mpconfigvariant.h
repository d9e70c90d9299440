// smartbms host variant of the unix port: the standard feature set, built 32-bit by
// scripts/host_micropython.sh, with the firmware and the host hardware shims frozen.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#include "variants/mpconfigvariant_common.h"
