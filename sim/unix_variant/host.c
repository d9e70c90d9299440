// Host-only helpers of the host interpreter, as module _host:
//  _host.wake_register(): wake the main thread when a callback is scheduled from another
//    thread, as the
// ESP32 wakes its MicroPython task when NimBLE delivers an event. Without it, an IRQ
// scheduled by the world link's watcher thread would wait until the main thread's poll()
// times out (an asyncio sleep of seconds). The signal interrupts that poll (EINTR), and
// MicroPython's poll loop then runs the scheduled callbacks.
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "py/gc.h"
#include "py/mpstate.h"
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

// _host.watch(fd, callback) / _host.watch_done(): a plain C thread (no Python in it, so no
// interpreter state shared without a lock) waits for the world link's event connection to
// become readable and schedules callback(None) on the main thread, as NimBLE schedules its
// events on the ESP32; it waits again only after watch_done(), which the callback calls
// once it drained the connection. The callback must stay referenced from Python.
static int watch_fd = -1;
static mp_obj_t watch_cb;
static sem_t watch_sem;

static void *watch_thread(void *arg) {
    (void)arg;
    struct pollfd p = { .fd = watch_fd, .events = POLLIN };
    for (;;) {
        int r = poll(&p, 1, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NULL;
        }
        while (!mp_sched_schedule(watch_cb, mp_const_none)) {
            usleep(1000);  // the schedule queue is full: try again shortly
        }
        while (sem_wait(&watch_sem) != 0 && errno == EINTR) {
        }
        if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
            return NULL;  // the world is gone; the callback has seen it too
        }
    }
}

static mp_obj_t host_watch(mp_obj_t fd_in, mp_obj_t cb) {
    if (watch_fd >= 0) {
        mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("already watching"));
    }
    watch_fd = mp_obj_get_int(fd_in);
    watch_cb = cb;
    sem_init(&watch_sem, 0, 0);
    // the thread takes no signal: they are the interpreter's (Ctrl-C, the wake-up, the GC)
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int err = pthread_create(&t, NULL, watch_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        watch_fd = -1;
        mp_raise_OSError(err);
    }
    pthread_detach(t);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(host_watch_obj, host_watch);

static mp_obj_t host_watch_done(void) {
    sem_post(&watch_sem);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(host_watch_done_obj, host_watch_done);

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

// _host.census(False) records what the heap holds now, by type; _host.census(True) prints
// what it holds beyond that record, as "sim census: 'type' bytes B/objects, ..." (largest
// first; "_raw_": blocks whose first word is no type object: dict tables, str data, buffers).
// Neither allocates on the heap it counts, so it can run in the middle of a load.
#include "py/objstr.h"
#include "py/objfun.h"
#define CENSUS_MAX 1024
#if MICROPY_GC_SPLIT_HEAP
#define NEXT_AREA(area) ((area)->next)
#else
#define NEXT_AREA(area) (NULL)
#endif
extern char __executable_start, _end;

typedef struct {
    qstr name;
    size_t count, bytes, base_count, base_bytes;
    bool shown;
} census_row_t;
static census_row_t census_rows[CENSUS_MAX];
static size_t census_n;

// The allocation table's 2 bits for a block: 0 free, 1 head, 2 tail, 3 marked head.
static size_t block_kind(const mp_state_mem_area_t *area, size_t b) {
    return (area->gc_alloc_table_start[b / 4] >> (2 * (b & 3))) & 3;
}

// Moves *b to the first object's head at or after it; returns that object's length in
// blocks, 0 when there is none (the census and the object list walk the heap this way).
static size_t heap_next_object(const mp_state_mem_area_t *area, size_t *b) {
    size_t blocks = area->gc_alloc_table_byte_len * 4;
    while (*b < blocks && block_kind(area, *b) != 1 && block_kind(area, *b) != 3) {
        (*b)++;
    }
    if (*b >= blocks) {
        return 0;
    }
    size_t len = 1;
    while (*b + len < blocks && block_kind(area, *b + len) == 2) {
        len++;
    }
    return len;
}

static bool census_is_head(const byte *p) {
    for (mp_state_mem_area_t *area = &MP_STATE_MEM(area); area != NULL; area = NEXT_AREA(area)) {
        if (p >= area->gc_pool_start && p < area->gc_pool_end) {
            size_t kind = block_kind(area, (p - area->gc_pool_start) / MICROPY_BYTES_PER_GC_BLOCK);
            return (kind == 1 || kind == 3) && (p - area->gc_pool_start) % MICROPY_BYTES_PER_GC_BLOCK == 0;
        }
    }
    return false;
}

static qstr census_name_of(const byte *obj) {
    const byte *t = *(const byte *const *)obj;
    bool static_type = t >= (const byte *)&__executable_start && t + sizeof(mp_obj_type_t) <= (const byte *)&_end;
    if (!static_type && !census_is_head(t)) {
        return MP_QSTR__raw_;
    }
    if (((uintptr_t)t & (sizeof(void *) - 1)) || ((const mp_obj_base_t *)t)->type != &mp_type_type) {
        return MP_QSTR__raw_;
    }
    // by name: bytecode and native functions are both "function"
    return ((const mp_obj_type_t *)t)->name;
}

static census_row_t *census_row(qstr name) {
    for (size_t i = 0; i < census_n; i++) {
        if (census_rows[i].name == name) {
            return &census_rows[i];
        }
    }
    if (census_n == CENSUS_MAX) {
        return NULL;
    }
    census_row_t *r = &census_rows[census_n++];
    r->name = name;
    r->count = r->bytes = r->base_count = r->base_bytes = 0;
    return r;
}

static mp_obj_t host_census(mp_obj_t report_in) {
    bool report = mp_obj_is_true(report_in);
    for (size_t i = 0; i < census_n; i++) {
        census_rows[i].count = census_rows[i].bytes = 0;
    }
    for (mp_state_mem_area_t *area = &MP_STATE_MEM(area); area != NULL; area = NEXT_AREA(area)) {
        size_t len;
        for (size_t b = 0; (len = heap_next_object(area, &b)) != 0; b += len) {
            census_row_t *r = census_row(census_name_of(area->gc_pool_start + b * MICROPY_BYTES_PER_GC_BLOCK));
            if (r != NULL) {
                r->count++;
                r->bytes += len * MICROPY_BYTES_PER_GC_BLOCK;
            }
        }
    }
    if (!report) {
        for (size_t i = 0; i < census_n; i++) {
            census_rows[i].base_count = census_rows[i].count;
            census_rows[i].base_bytes = census_rows[i].bytes;
        }
        return mp_const_none;
    }
    // the 16 largest growths, by selection (no allocation)
    mp_printf(&mp_plat_print, "sim census:");
    const char *sep = " ";
    for (size_t i = 0; i < census_n; i++) {
        census_rows[i].shown = false;
    }
    for (int k = 0; k < 16; k++) {
        long best = 0;
        census_row_t *pick = NULL;
        for (size_t i = 0; i < census_n; i++) {
            long d = (long)census_rows[i].bytes - (long)census_rows[i].base_bytes;
            if (!census_rows[i].shown && d > best) {
                best = d;
                pick = &census_rows[i];
            }
        }
        if (pick == NULL) {
            break;
        }
        pick->shown = true;
        mp_printf(&mp_plat_print, "%s'%s' %ld B/%ld", sep, qstr_str(pick->name), best,
            (long)pick->count - (long)pick->base_count);
        sep = ", ";
    }
    mp_printf(&mp_plat_print, "\n");
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(host_census_obj, host_census);

// _host.objects(offset): every object whose head lies at `offset` bytes or more into the
// heap, as "off len type [first bytes]" (a debugging aid for fragmentation: what is it that
// sits high in the heap at idle). Allocates nothing.
static mp_obj_t host_objects(mp_obj_t from_in) {
    mp_state_mem_area_t *area = &MP_STATE_MEM(area);
    size_t len;
    for (size_t b = mp_obj_get_int(from_in) / MICROPY_BYTES_PER_GC_BLOCK; (len = heap_next_object(area, &b)) != 0; b += len) {
        const byte *obj = area->gc_pool_start + b * MICROPY_BYTES_PER_GC_BLOCK;
        qstr name = census_name_of(obj);
        mp_printf(&mp_plat_print, "obj %x %u %s", (unsigned)(b * MICROPY_BYTES_PER_GC_BLOCK), (unsigned)(len * MICROPY_BYTES_PER_GC_BLOCK), qstr_str(name));
        if (name == MP_QSTR__raw_ || name == MP_QSTR_str) {
            const byte *d = name == MP_QSTR_str ? ((const mp_obj_str_t *)obj)->data : obj;
            size_t n = name == MP_QSTR_str ? ((const mp_obj_str_t *)obj)->len : 16;
            if (name == MP_QSTR_str && !census_is_head(d)) {
                n = 0;
            }
            mp_printf(&mp_plat_print, " ");
            for (size_t i = 0; i < n && i < 24; i++) {
                mp_printf(&mp_plat_print, d[i] >= 32 && d[i] < 127 ? "%c" : "\\x%02x", d[i]);
            }
        }
        if (*(const mp_obj_type_t *const *)obj == &mp_type_gen_instance) {  // its function's name
            const mp_obj_t *w = (const mp_obj_t *)obj;
            mp_printf(&mp_plat_print, " %s", qstr_str(mp_obj_fun_bc_get_name((const mp_obj_fun_bc_t *)w[2])));
        }
        mp_printf(&mp_plat_print, "\n");
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(host_objects_obj, host_objects);

// _host.reach(obj, stop) -> (bytes, objects) on the heap reachable from obj, following every
// word that points at an object's head (as the collector does), never into obj's in `stop`
// (a tuple: the app, say, that everything points back to), nor into classes and modules
// (a function's globals would reach everything). What a part costs, measured.
// Allocates nothing.
#define REACH_STACK 4096
static uint8_t reach_seen[65536];  // heaps up to 8 MB
static const byte *reach_stack[REACH_STACK];

static size_t reach_block(const byte *p, bool *ok) {
    mp_state_mem_area_t *area = &MP_STATE_MEM(area);
    *ok = false;
    if (p < area->gc_pool_start || p >= area->gc_pool_end || (p - area->gc_pool_start) % MICROPY_BYTES_PER_GC_BLOCK) {
        return 0;
    }
    size_t b = (p - area->gc_pool_start) / MICROPY_BYTES_PER_GC_BLOCK;
    size_t kind = block_kind(area, b);
    *ok = kind == 1 || kind == 3;
    return b;
}

static mp_obj_t host_reach(size_t n_args, const mp_obj_t *args) {
    mp_obj_t obj_in = args[0], stop_in = args[1];
    bool show = n_args > 2 && mp_obj_is_true(args[2]);  // and print each object, as objects() does
    bool fresh = n_args < 4 || mp_obj_is_true(args[3]);  // False: not what earlier calls reached
    mp_state_mem_area_t *area = &MP_STATE_MEM(area);
    size_t blocks = area->gc_alloc_table_byte_len * 4;
    if (blocks / 8 + 1 > sizeof(reach_seen)) {
        mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("heap larger than reach() can map"));
    }
    if (fresh) {
        memset(reach_seen, 0, blocks / 8 + 1);
    }
    size_t nstop;
    mp_obj_t *stop;
    mp_obj_get_array(stop_in, &nstop, &stop);
    bool ok;
    for (size_t i = 0; i < nstop; i++) {
        size_t b = reach_block((const byte *)MP_OBJ_TO_PTR(stop[i]), &ok);
        if (ok) {
            reach_seen[b / 8] |= 1 << (b & 7);
        }
    }
    size_t sp = 0, bytes = 0, count = 0;
    size_t b0 = reach_block((const byte *)MP_OBJ_TO_PTR(obj_in), &ok);
    if (ok && !(reach_seen[b0 / 8] & (1 << (b0 & 7)))) {
        reach_seen[b0 / 8] |= 1 << (b0 & 7);
        reach_stack[sp++] = area->gc_pool_start + b0 * MICROPY_BYTES_PER_GC_BLOCK;
    }
    while (sp) {
        const byte *o = reach_stack[--sp];
        const mp_obj_type_t *t = ((const mp_obj_base_t *)o)->type;
        if (o != MP_OBJ_TO_PTR(obj_in) && (t == &mp_type_type || t == &mp_type_module)) {
            continue;  // classes and modules are everyone's: not part of what is measured
        }
        bool stopped = false;
        for (size_t i = 0; i < nstop && o != MP_OBJ_TO_PTR(obj_in); i++) {
            stopped |= MP_OBJ_TO_PTR(stop[i]) == t;  // a class in `stop`: none of its instances
        }
        if (stopped) {
            continue;
        }
        size_t b = (o - area->gc_pool_start) / MICROPY_BYTES_PER_GC_BLOCK;
        size_t len = 1;
        while (b + len < blocks && block_kind(area, b + len) == 2) {
            len++;
        }
        bytes += len * MICROPY_BYTES_PER_GC_BLOCK;
        count++;
        if (show) {
            qstr name = census_name_of(o);
            mp_printf(&mp_plat_print, "reach %x %u %s", (unsigned)(b * MICROPY_BYTES_PER_GC_BLOCK), (unsigned)(len * MICROPY_BYTES_PER_GC_BLOCK), qstr_str(name));
            if (t == &mp_type_gen_instance) {
                mp_printf(&mp_plat_print, " %s", qstr_str(mp_obj_fun_bc_get_name((const mp_obj_fun_bc_t *)((const mp_obj_t *)o)[2])));
            } else if (name == MP_QSTR_str && census_is_head(((const mp_obj_str_t *)o)->data)) {
                mp_printf(&mp_plat_print, " %.*s", (int)(((const mp_obj_str_t *)o)->len < 24 ? ((const mp_obj_str_t *)o)->len : 24), ((const mp_obj_str_t *)o)->data);
            }
            mp_printf(&mp_plat_print, "\n");
        }
        const byte *const *w = (const byte *const *)o;
        for (size_t i = 0; i < len * MICROPY_BYTES_PER_GC_BLOCK / sizeof(void *); i++) {
            size_t c = reach_block(w[i], &ok);
            if (ok && !(reach_seen[c / 8] & (1 << (c & 7)))) {
                reach_seen[c / 8] |= 1 << (c & 7);
                if (sp == REACH_STACK) {
                    mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("reach() stack full"));
                }
                reach_stack[sp++] = w[i];
            }
        }
    }
    mp_obj_t t[2] = { mp_obj_new_int(bytes), mp_obj_new_int(count) };
    return mp_obj_new_tuple(2, t);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(host_reach_obj, 2, 4, host_reach);

// _host.unreached(min_bytes) prints every object no reach() since the last fresh one reached,
// that many bytes or larger, and returns the bytes of all of them.
static mp_obj_t host_unreached(mp_obj_t min_in) {
    mp_state_mem_area_t *area = &MP_STATE_MEM(area);
    size_t min = mp_obj_get_int(min_in), total = 0, len;
    for (size_t b = 0; (len = heap_next_object(area, &b)) != 0; b += len) {
        if (reach_seen[b / 8] & (1 << (b & 7))) {
            continue;
        }
        total += len * MICROPY_BYTES_PER_GC_BLOCK;
        if (len * MICROPY_BYTES_PER_GC_BLOCK >= min) {
            const byte *o = area->gc_pool_start + b * MICROPY_BYTES_PER_GC_BLOCK;
            qstr name = census_name_of(o);
            mp_printf(&mp_plat_print, "unreached %x %u %s", (unsigned)(b * MICROPY_BYTES_PER_GC_BLOCK), (unsigned)(len * MICROPY_BYTES_PER_GC_BLOCK), qstr_str(name));
            if (name == MP_QSTR__raw_) {
                mp_printf(&mp_plat_print, " ");
                for (size_t i = 0; i < 24; i++) {
                    mp_printf(&mp_plat_print, o[i] >= 32 && o[i] < 127 ? "%c" : "\\x%02x", o[i]);
                }
            }
            mp_printf(&mp_plat_print, "\n");
        }
    }
    return mp_obj_new_int(total);
}
static MP_DEFINE_CONST_FUN_OBJ_1(host_unreached_obj, host_unreached);

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
    { MP_ROM_QSTR(MP_QSTR_watch), MP_ROM_PTR(&host_watch_obj) },
    { MP_ROM_QSTR(MP_QSTR_watch_done), MP_ROM_PTR(&host_watch_done_obj) },
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__host) },
    { MP_ROM_QSTR(MP_QSTR_wake_register), MP_ROM_PTR(&hostwake_register_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap), MP_ROM_PTR(&host_heap_obj) },
    { MP_ROM_QSTR(MP_QSTR_census), MP_ROM_PTR(&host_census_obj) },
    { MP_ROM_QSTR(MP_QSTR_objects), MP_ROM_PTR(&host_objects_obj) },
    { MP_ROM_QSTR(MP_QSTR_reach), MP_ROM_PTR(&host_reach_obj) },
    { MP_ROM_QSTR(MP_QSTR_unreached), MP_ROM_PTR(&host_unreached_obj) },
};
static MP_DEFINE_CONST_DICT(hostwake_globals, hostwake_globals_table);

const mp_obj_module_t mp_module_hostwake = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&hostwake_globals,
};

MP_REGISTER_MODULE(MP_QSTR__host, mp_module_hostwake);
