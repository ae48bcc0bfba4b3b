/*
 * config_load.h - what the tests of the configuration loader share
 * (test_config.c, test_confroute.c): the smallest valid file, and loading
 * text as a file that must load or must fail with exactly
 * "FILE:LINE:COLUMN: message".  Included once per test program, after
 * cmocka.h.
 */
#ifndef GW_TESTS_CONFIG_LOAD_H
#define GW_TESTS_CONFIG_LOAD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master/master.h"

/* The smallest valid file; error cases add to it or change it. */
#define PROVIDERS                                                                                  \
    "providers:\n"                                                                                 \
    "  - name: local\n"                                                                            \
    "    type: openai\n"                                                                           \
    "    base_url: http://127.0.0.1:9090/v1\n"
#define MODELS                                                                                     \
    "models:\n"                                                                                    \
    "  - name: demo\n"                                                                             \
    "    targets:\n"                                                                               \
    "      - provider: local\n"                                                                    \
    "        model: mock-small\n"
#define MINIMAL PROVIDERS MODELS

static char yaml_path[64];

/* Write text to a new temporary file; its name is left in yaml_path. */
static void
write_temp(char *path, size_t size, const char *text)
{
    snprintf(path, size, "/tmp/aigw-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Load text as a configuration file; the file is removed afterwards. */
static int
load_text(const char *text, struct gw_config **cfg, char *err, size_t errlen)
{
    write_temp(yaml_path, sizeof(yaml_path), text);
    int rc = gw_master_config_load(yaml_path, cfg, err, errlen);
    unlink(yaml_path);
    return rc;
}

static struct gw_config *
load_ok(const char *text)
{
    struct gw_config *cfg = NULL;
    char err[512] = "";

    int rc = load_text(text, &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_non_null(cfg);
    return cfg;
}

/* The load of text must fail with exactly "FILE:line:column: msg". */
static void
expect_error(const char *text, int line, int column, const char *msg)
{
    struct gw_config *cfg = NULL;
    char err[512], want[512];

    assert_int_equal(load_text(text, &cfg, err, sizeof(err)), GW_ECONFIG);
    assert_null(cfg);
    snprintf(want, sizeof(want), "%s:%d:%d: %s", yaml_path, line, column, msg);
    assert_string_equal(err, want);
}

#endif
