/*
 * ttmem.h - C ABI of the ttmem client library (libttmem.so / libttmem.a).
 *
 * A device runtime calls ttmem_alloc / ttmem_free on every allocation and free. They make no
 * system call, take no lock, never block and never fail. Everything else returns a
 * ttmem_result; after any result but TTMEM_OK, ttmem_last_error says why. Strings passed in
 * are borrowed for the call only and must be UTF-8; nothing returned needs freeing. All
 * functions act on one process-wide tracker configured from the environment on first use:
 *   TTMEM_DISABLE=1         turn tracking off (about a nanosecond per call)
 *   TTMEM_DIR               region directory (default /dev/shm/ttmem)
 *   TTMEM_RING_EVENTS       events per thread ring, a power of two (default 16384)
 *   TTMEM_SHARDS            thread shards (default 32)
 *   TTMEM_REGION_MODE       region file mode, octal (default 600)
 *   TTMEM_PROCESS_NAME      the name readers show (default: the executable's)
 *   TTMEM_CLOCK=tsc|coarse  the event clock (default coarse)
 *   TTMEM_CLOCK_US          the coarse clock's tick in microseconds
 *   TTMEM_KEEP_ON_EXIT=1    keep the region file after a clean exit
 * Link: -lttmem (shared), or libttmem.a plus -lpthread -ldl -lm (static).
 *
 * The test suite checks this header against the library: the exported functions, every
 * struct's size and field offsets and every constant (with _Static_assert in C), and this list
 * of environment variables.
 */
#ifndef TTMEM_H
#define TTMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ttmem_result {
    TTMEM_OK = 0,
    TTMEM_DISABLED = 1,         /* tracking is off; the call did nothing */
    TTMEM_INVALID_ARGUMENT = 2, /* a NULL pointer, a string that is not UTF-8, a bad value */
    TTMEM_TOO_MANY_DEVICES = 3, /* the device table is full */
    TTMEM_IO_ERROR = 4,         /* no region file (see ttmem_last_error); counting goes on in-process */
    TTMEM_INTERNAL_ERROR = 5    /* a bug in ttmem, caught */
} ttmem_result;

/* Device kinds. */
#define TTMEM_KIND_TENSTORRENT 1u
#define TTMEM_KIND_SIMULATED_TENSTORRENT 2u
#define TTMEM_KIND_CUDA 3u

/* Category indices of the usual Tenstorrent declaration order. */
#define TTMEM_TT_DRAM 0
#define TTMEM_TT_L1 1
#define TTMEM_TT_L1_SMALL 2
#define TTMEM_TT_TRACE 3
#define TTMEM_TT_CB 4
#define TTMEM_TT_KERNEL 5
#define TTMEM_TT_SYSTEM_MEMORY 6

typedef struct ttmem_category {
    const char *name;   /* e.g. "DRAM"; at most 16 bytes are kept */
    uint64_t capacity;  /* allocatable bytes across banks, 0 if unknown */
    uint64_t addr_base; /* first allocatable address of one bank */
    uint64_t addr_end;  /* end (exclusive) of one bank's range */
    uint32_t banks;     /* banks the range repeats across; 1 for a flat space */
    uint32_t alignment; /* bytes */
} ttmem_category;

typedef struct ttmem_device_desc {
    uint32_t kind;                     /* TTMEM_KIND_* */
    uint64_t hw_id;                    /* stable hardware id, 0 if unknown */
    int32_t logical_id;                /* the runtime's device id */
    int remote;                        /* non-zero for a remote chip */
    const char *arch;                  /* e.g. "wormhole_b0" */
    const char *name;                  /* display name */
    const ttmem_category *categories;  /* num_categories entries */
    uint32_t num_categories;           /* 1 to 16 */
} ttmem_device_desc;

typedef struct ttmem_counters {
    int64_t live_bytes;
    int64_t live_count;
    uint64_t allocs;
    uint64_t frees;
    uint64_t alloc_bytes;
    uint64_t free_bytes;
    int64_t peak_bytes;
} ttmem_counters;

/* Registers a device and writes its handle to *out_device (same hw_id and logical_id: same
 * handle). arch, name and every category name are required. When tracking is off it returns
 * TTMEM_DISABLED and writes handle 0, whose calls do nothing, so callers may treat
 * TTMEM_DISABLED like TTMEM_OK; TTMEM_IO_ERROR also writes a working handle. */
ttmem_result ttmem_register_device(const ttmem_device_desc *desc, uint16_t *out_device);

/* Hot path: record an allocation / a free of `size` bytes at `address`. */
void ttmem_alloc(uint16_t device, uint8_t category, uint64_t address, uint64_t size);
void ttmem_free(uint16_t device, uint8_t category, uint64_t address, uint64_t size);

/* For runtimes that free by address only: remember the address at allocation (a striped
 * process-local map; slower than ttmem_alloc). ttmem_free_addr returns 1 if known, else 0. */
void ttmem_alloc_mapped(uint16_t device, uint8_t category, uint64_t address, uint64_t size);
int ttmem_free_addr(uint16_t device, uint64_t address);

/* Tag this thread's following events (op or tensor name); pop with the returned token. NULL is
 * no tag; bytes that are not UTF-8 are replaced. */
uint32_t ttmem_tag_push(const char *tag);
void ttmem_tag_pop(uint32_t token);

/* A mark event (phase boundary) with a tag. */
void ttmem_mark(uint16_t device, const char *tag);

/* This process's counters for one device category. */
ttmem_result ttmem_get_counters(uint16_t device, uint8_t category, ttmem_counters *out);

/* 1 when tracking is on, 0 when disabled or unavailable. */
int ttmem_enabled(void);

/* Copies the region file path into buf (NUL-terminated, truncated to len); returns the full
 * length, or 0 without a region file. buf may be NULL to ask the length. */
size_t ttmem_region_path(char *buf, size_t len);

/* Marks the region exited and removes its file (automatic at a clean exit). */
void ttmem_shutdown(void);

/* Copies why this thread's last failing call failed into buf (NUL-terminated, truncated to
 * len); returns the message's full length, 0 if none. buf may be NULL to ask the length. */
size_t ttmem_last_error(char *buf, size_t len);

/* The library version (e.g. "0.1.0"), a static string. */
const char *ttmem_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TTMEM_H */
