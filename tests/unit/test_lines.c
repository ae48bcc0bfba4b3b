/*
 * test_lines.c - whole lines appended to the access log and the capture
 * files (gw_worker_lines_write): a write the disk stops part way leaves
 * one cut line, the next write ends it, and a file opened since (a
 * rotation) starts with a record, not an empty line.  The disk is made
 * to stop with RLIMIT_FSIZE, which cuts a write at a byte of our choice
 * as a full disk does (EFBIG instead of ENOSPC).  And a log message is
 * one line (gw_log).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "worker/worker.h"

#define BIT 1u
#define LINE_A "{\"n\":1,\"pad\":\"aaaaaaaaaaaaaaaaaaaa\"}\n"
#define LINE_B "{\"n\":2,\"pad\":\"bbbbbbbbbbbbbbbbbbbb\"}\n"
#define LINE_C "{\"n\":3}\n"
#define LIT(s) (s), sizeof(s) - 1

static char dir[] = "/tmp/aigw-lines-XXXXXX";

static int
setup(void **state)
{
    (void)state;
    signal(SIGXFSZ, SIG_IGN); /* EFBIG instead */
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    return rmdir(dir);
}

static int
open_append(const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    return fd;
}

static void
disk_room(off_t bytes)
{
    struct rlimit rl = {.rlim_cur = bytes < 0 ? RLIM_INFINITY : (rlim_t)bytes,
                        .rlim_max = RLIM_INFINITY};

    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static char *
slurp(const char *path)
{
    static char text[4096];
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(path);
    return text;
}

/* The file filled up in LINE_B: the start of it stays, and the next
 * line begins on a line of its own. */
static void
test_cut_line_is_ended(void **state)
{
    _Atomic uint32_t cut = 0;
    char path[256];
    int fd = open_append("access.log", path, sizeof(path));

    (void)state;
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_A)), 0);
    disk_room(sizeof(LINE_A) - 1 + 10);
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_B)), EFBIG);
    assert_int_equal(cut, BIT);
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_C)), EFBIG);
    assert_int_equal(cut, BIT); /* nothing went: still cut */
    disk_room(-1);
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_C)), 0);
    assert_int_equal(cut, 0);
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_A)), 0);
    close(fd);
    assert_string_equal(slurp(path), LINE_A "{\"n\":2,\"pa\n" LINE_C LINE_A);
}

/* Rotated after the cut: the new file is empty, and its first line is
 * a record.  Another file's bit is not touched. */
static void
test_rotated_file_starts_with_a_record(void **state)
{
    _Atomic uint32_t cut = 2;
    char path[256], rotated[sizeof(path) + 2];
    int fd = open_append("capture.jsonl", path, sizeof(path));

    (void)state;
    disk_room(10);
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_A)), EFBIG);
    assert_int_equal(cut, 2 | BIT);
    disk_room(-1);
    close(fd);
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    assert_int_equal(rename(path, rotated), 0);
    assert_string_equal(slurp(rotated), "{\"n\":1,\"pa");

    fd = open_append("capture.jsonl", path, sizeof(path));
    assert_int_equal(gw_worker_lines_write(fd, &cut, BIT, LIT(LINE_B)), 0);
    assert_int_equal(cut, 2);
    close(fd);
    assert_string_equal(slurp(path), LINE_B);
}

/* A pipe (stderr, a log collector) cannot be looked at: the cut line is
 * ended there too. */
static void
test_cut_line_on_a_pipe(void **state)
{
    _Atomic uint32_t cut = BIT;
    int p[2];
    char got[128];

    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(gw_worker_lines_write(p[1], &cut, BIT, LIT(LINE_C)), 0);
    assert_int_equal(cut, 0);
    close(p[1]);
    ssize_t n = read(p[0], got, sizeof(got) - 1);
    close(p[0]);
    assert_true(n > 0);
    got[n] = '\0';
    assert_string_equal(got, "\n" LINE_C);
}

/* A log message quoting a provider's error or a client's text stays one
 * line, and no escape sequence in it acts on a terminal that shows the
 * log. */
static void
test_log_message_is_one_line(void **state)
{
    char path[256], *text;
    int fd = open_append("error.log", path, sizeof(path)), saved = dup(STDERR_FILENO);

    (void)state;
    gw_log_init("worker[1]");
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    gw_log(GW_LOG_ERROR, "upstream said: %s",
           "bad\nday\r\n\x1b[2J\tend\x7f \xc2\x9b"
           "1m \xc3\xa9");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fd);
    text = slurp(path);
    assert_non_null(
        strstr(text, " error worker[1]: upstream said: bad?day???[2J\tend? ?1m \xc3\xa9\n"));
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_line_is_ended),
        cmocka_unit_test(test_rotated_file_starts_with_a_record),
        cmocka_unit_test(test_cut_line_on_a_pipe),
        cmocka_unit_test(test_log_message_is_one_line),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
