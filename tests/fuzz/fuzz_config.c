/*
 * fuzz_config.c - the configuration loader (master/config*.c over libyaml):
 * whatever the file holds, aigwd -t and a reload either take it or name
 * what is wrong and where.
 *
 * Promise checked: a file that does not load gets a message that starts
 * with the file's name, and with a line and a column when the file could
 * be read ("FILE:LINE:COLUMN: message"); one that loads is freed whole.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "master/master.h"
#include "tests/fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[1024];
    struct gw_config *cfg = NULL;
    int fd = memfd_create("aigw.yaml", 0);

    if (fd < 0)
        return 0;
    gw_log_level = -1;
    if (gw_write_all(fd, data, size) != 0) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int rc = gw_master_config_load(path, &cfg, err, sizeof(err));
    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL);
        gw_config_free(cfg);
    } else {
        size_t n = strlen(path);
        unsigned line, col;
        FUZZ_CHECK(strncmp(err, path, n) == 0 && err[n] == ':');
        FUZZ_CHECK(sscanf(err + n, ":%u:%u: ", &line, &col) == 2 && line >= 1 && col >= 1);
    }
    close(fd);
    return 0;
}
