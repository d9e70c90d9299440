// Host-only helpers of the host interpreter, as module _host:
//  _host.wake_register(): wake the main thread when a callback is scheduled from another
//    thread, as the
// ESP32 wakes its MicroPython task when NimBLE delivers an event. Without it, an IRQ
// scheduled by the world link's watcher thread would wait until the main thread's poll()
// times out (an asyncio sleep of seconds). The signal interrupts that poll (EINTR), and
// MicroPython's poll loop then runs the scheduled callbacks.
#include <pthread.h>
#include <signal.h>

#include "py/gc.h"
#include "py/objarray.h"
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

// _host.wake_register(): called once from the main thread by the world link.
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

// _host.heap() -> (total, used, free, largest free block) in bytes, without collecting:
// what micropython.mem_info() prints, as numbers (the heap budget is measured with it).
static mp_obj_t host_heap(void) {
    gc_info_t info;
    gc_info(&info);
    mp_obj_t items[4] = {
        mp_obj_new_int_from_uint(info.total),
        mp_obj_new_int_from_uint(info.used),
        mp_obj_new_int_from_uint(info.free),
        mp_obj_new_int_from_uint(info.max_free * MICROPY_BYTES_PER_GC_BLOCK),
    };
    return mp_obj_new_tuple(4, items);
}
static MP_DEFINE_CONST_FUN_OBJ_0(host_heap_obj, host_heap);

// _host.static_buffer(n) -> a bytearray-backed memoryview of n bytes outside the GC heap
// (at most 4 KB in all): the world link's buffers stand for NimBLE's and lwIP's, which on
// the chip live in ESP-IDF's memory, not in the Python heap.
static uint8_t static_pool[4096];
static size_t static_used;

static mp_obj_t host_static_buffer(mp_obj_t n_in) {
    size_t n = mp_obj_get_int(n_in);
    if (n > sizeof(static_pool) - static_used) {
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("static pool exhausted"));
    }
    uint8_t *p = static_pool + static_used;
    static_used += n;
    return mp_obj_new_memoryview(MP_OBJ_ARRAY_TYPECODE_FLAG_RW | 'B', n, p);
}
static MP_DEFINE_CONST_FUN_OBJ_1(host_static_buffer_obj, host_static_buffer);

static const mp_rom_map_elem_t hostwake_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_static_buffer), MP_ROM_PTR(&host_static_buffer_obj) },
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__host) },
    { MP_ROM_QSTR(MP_QSTR_wake_register), MP_ROM_PTR(&hostwake_register_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap), MP_ROM_PTR(&host_heap_obj) },
};
static MP_DEFINE_CONST_DICT(hostwake_globals, hostwake_globals_table);

const mp_obj_module_t mp_module_hostwake = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&hostwake_globals,
};

MP_REGISTER_MODULE(MP_QSTR__host, mp_module_hostwake);
