/* Exercises libttmem through include/ttmem.h; exits non-zero with a message on any failure.
 * Run by tests/c_abi.rs with TTMEM_DIR set to a private directory. With argument "disabled"
 * it expects TTMEM_DISABLE=1 behaviour. */
#include "ttmem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

static ttmem_device_desc desc(ttmem_category *cats) {
    ttmem_device_desc d;
    memset(&d, 0, sizeof d);
    d.kind = TTMEM_KIND_SIMULATED_TENSTORRENT;
    d.hw_id = 0xC0FFEE;
    d.logical_id = 0;
    d.arch = "wormhole_b0";
    d.name = "c-test";
    d.categories = cats;
    d.num_categories = 2;
    return d;
}

int main(int argc, char **argv) {
    ttmem_category cats[2] = {
        {"DRAM", 12ull << 30, 0, 1ull << 30, 12, 64},
        {"L1", 64ull * 1024 * 1024, 0, 1 << 20, 64, 32},
    };
    ttmem_device_desc d = desc(cats);
    uint16_t dev = 0xFFFF;
    char why[256];
    CHECK(strcmp(ttmem_version(), TTMEM_EXPECTED_VERSION) == 0);
    CHECK(ttmem_last_error(NULL, 0) == 0);

    if (argc > 1 && strcmp(argv[1], "io-error") == 0) {
        /* TTMEM_DIR cannot be created: the device works in-process and the error names the
         * directory. */
        CHECK(ttmem_register_device(&d, &dev) == TTMEM_IO_ERROR && dev != 0xFFFF);
        CHECK(ttmem_last_error(why, sizeof why) > 0 && strstr(why, getenv("TTMEM_DIR")) != NULL);
        ttmem_alloc(dev, TTMEM_TT_DRAM, 0x1000, 4096);
        ttmem_counters c;
        CHECK(ttmem_get_counters(dev, TTMEM_TT_DRAM, &c) == TTMEM_OK && c.live_bytes == 4096);
        CHECK(ttmem_region_path(NULL, 0) == 0);
        printf("io-error ok: %s\n", why);
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "disabled") == 0) {
        CHECK(ttmem_enabled() == 0);
        CHECK(ttmem_register_device(&d, &dev) == TTMEM_DISABLED && dev == 0);
        ttmem_alloc(0, 0, 0x1000, 4096); /* must be a harmless no-op */
        CHECK(ttmem_region_path(NULL, 0) == 0);
        printf("disabled ok\n");
        return 0;
    }

    CHECK(ttmem_enabled() == 1);
    CHECK(ttmem_register_device(NULL, &dev) == TTMEM_INVALID_ARGUMENT);
    CHECK(ttmem_last_error(why, sizeof why) > 0 && strstr(why, "NULL") != NULL);
    d.num_categories = 0;
    CHECK(ttmem_register_device(&d, &dev) == TTMEM_INVALID_ARGUMENT);
    d.num_categories = 2;
    /* Required strings: NULL and invalid UTF-8 are refused, saying which. */
    d.arch = NULL;
    CHECK(ttmem_register_device(&d, &dev) == TTMEM_INVALID_ARGUMENT);
    CHECK(ttmem_last_error(why, sizeof why) > 0 && strcmp(why, "arch is NULL") == 0);
    d.arch = "wormhole_b0";
    d.name = "bad\xff";
    CHECK(ttmem_register_device(&d, &dev) == TTMEM_INVALID_ARGUMENT);
    CHECK(ttmem_last_error(why, sizeof why) > 0 && strstr(why, "name is not UTF-8") != NULL);
    d.name = "c-test";
    cats[1].name = NULL;
    CHECK(ttmem_register_device(&d, &dev) == TTMEM_INVALID_ARGUMENT);
    CHECK(ttmem_last_error(why, sizeof why) > 0 && strcmp(why, "categories[1].name is NULL") == 0);
    cats[1].name = "L1";
    CHECK(ttmem_register_device(&d, &dev) == TTMEM_OK);
    uint16_t again = 0xFFFF;
    CHECK(ttmem_register_device(&d, &again) == TTMEM_OK && again == dev);

    uint32_t token = ttmem_tag_push("weights");
    for (uint64_t i = 0; i < 100; i++) ttmem_alloc(dev, TTMEM_TT_DRAM, 0x10000 + i * 4096, 4096);
    ttmem_tag_pop(token);
    for (uint64_t i = 0; i < 50; i++) ttmem_free(dev, TTMEM_TT_DRAM, 0x10000 + i * 4096, 4096);
    ttmem_alloc_mapped(dev, TTMEM_TT_L1, 0x400, 2048);
    CHECK(ttmem_free_addr(dev, 0x400) == 1);
    CHECK(ttmem_free_addr(dev, 0x400) == 0);
    ttmem_alloc(dev, 9, 0, 1); /* unregistered category: rejected, not counted */
    ttmem_mark(dev, "step-1");

    ttmem_counters c;
    CHECK(ttmem_get_counters(dev, TTMEM_TT_DRAM, &c) == TTMEM_OK);
    CHECK(c.live_bytes == 50 * 4096 && c.live_count == 50 && c.allocs == 100 && c.frees == 50);
    CHECK(c.peak_bytes == 100 * 4096);
    CHECK(ttmem_get_counters(dev, TTMEM_TT_L1, &c) == TTMEM_OK && c.live_bytes == 0 && c.allocs == 1);
    CHECK(ttmem_get_counters(dev, 9, &c) == TTMEM_INVALID_ARGUMENT);
    CHECK(ttmem_get_counters(dev, 0, NULL) == TTMEM_INVALID_ARGUMENT);

    char path[512];
    size_t n = ttmem_region_path(path, sizeof path);
    CHECK(n > 0 && n < sizeof path);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    char tiny[4];
    CHECK(ttmem_region_path(tiny, sizeof tiny) == n && strlen(tiny) == 3);

    /* fork: the child gets its own region, and its exit removes only that one. */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        ttmem_alloc(dev, TTMEM_TT_DRAM, 0xDEAD000, 1 << 20);
        char child_path[512];
        size_t m = ttmem_region_path(child_path, sizeof child_path);
        ttmem_counters cc;
        int ok = m > 0 && strcmp(child_path, path) != 0 && ttmem_get_counters(dev, TTMEM_TT_DRAM, &cc) == TTMEM_OK &&
                 cc.live_bytes == (1 << 20) && cc.allocs == 1;
        if (write(fds[1], child_path, m + 1) < 0) ok = 0;
        exit(ok ? 0 : 3);
    }
    close(fds[1]);
    char child_path[512] = {0};
    CHECK(read(fds[0], child_path, sizeof child_path - 1) > 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strcmp(child_path, path) != 0);
    CHECK(stat(child_path, &st) != 0); /* the child's clean exit removed its region */
    CHECK(stat(path, &st) == 0);       /* ours is still there */
    CHECK(ttmem_get_counters(dev, TTMEM_TT_DRAM, &c) == TTMEM_OK && c.live_bytes == 50 * 4096);

    printf("%s\n", path);
    return 0; /* the clean exit removes our region; the test checks */
}
