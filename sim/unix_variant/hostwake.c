// Host-only: wake the main thread when a callback is scheduled from another thread, as the
// ESP32 wakes its MicroPython task when NimBLE delivers an event. Without it, an IRQ
// scheduled by the world link's watcher thread would wait until the main thread's poll()
// times out (an asyncio sleep of seconds). The signal interrupts that poll (EINTR), and
// MicroPython's poll loop then runs the scheduled callbacks.
#include <pthread.h>
#include <signal.h>

#include "py/runtime.h"

static pthread_t main_thread;
static volatile int registered;

static void on_wake(int sig) {
    (void)sig;
}

// MICROPY_SCHED_HOOK_SCHEDULED (mpconfigvariant.h): called by mp_sched_schedule().
void smartbms_host_wake_main(void) {
    if (registered && !pthread_equal(pthread_self(), main_thread)) {
        pthread_kill(main_thread, SIGUSR2);
    }
}

// _hostwake.register(): called once from the main thread by the world link.
static mp_obj_t hostwake_register(void) {
    struct sigaction sa;
    sa.sa_handler = on_wake;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocked poll() returns with EINTR
    sigaction(SIGUSR2, &sa, NULL);
    main_thread = pthread_self();
    registered = 1;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hostwake_register_obj, hostwake_register);

static const mp_rom_map_elem_t hostwake_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__hostwake) },
    { MP_ROM_QSTR(MP_QSTR_register), MP_ROM_PTR(&hostwake_register_obj) },
};
static MP_DEFINE_CONST_DICT(hostwake_globals, hostwake_globals_table);

const mp_obj_module_t mp_module_hostwake = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&hostwake_globals,
};

MP_REGISTER_MODULE(MP_QSTR__hostwake, mp_module_hostwake);
