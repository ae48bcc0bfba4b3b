/*
 * golden.h - what the golden-file tests share (test_providers.c,
 * test_messages.c): reading a file of tests/unit/golden/, comparing an
 * output with its .golden file (or writing it with GOLDEN_UPDATE=1), and
 * pretty-printing JSON so that a golden diff reads line by line.
 * Included once per test program, after cmocka.h.
 */
#ifndef GW_TESTS_GOLDEN_H
#define GW_TESTS_GOLDEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define GOLDEN "tests/unit/golden/"
#define PRETTY (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)n + 1)) != NULL) {
        *len = fread(data, 1, (size_t)n, f);
        data[*len] = '\0';
    }
    fclose(f);
    return data;
}

/* Compare got with the golden file, or write it with GOLDEN_UPDATE=1. */
static void
golden_check(const char *name, const char *got, size_t len)
{
    char path[256];
    size_t wlen = 0;

    snprintf(path, sizeof(path), GOLDEN "%s", name);
    if (getenv("GOLDEN_UPDATE") != NULL) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(got, 1, len, f), len);
        fclose(f);
        return;
    }
    char *want = slurp(path, &wlen);
    if (want == NULL)
        fail_msg("no golden file %s (GOLDEN_UPDATE=1 writes it)", path);
    if (wlen != len || memcmp(want, got, len) != 0) {
        print_error("--- %s\n%s\n--- got\n%.*s\n", path, want, (int)len, got);
        free(want);
        fail_msg("%s differs", path);
    }
    free(want);
}

/* A JSON text pretty-printed, so that a golden diff reads line by line. */
static char *
pretty(const char *s, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    char *out;

    json_tokener_free(tok);
    if (o == NULL)
        fail_msg("not JSON: %.*s", (int)len, s);
    out = strdup(json_object_to_json_string_ext(o, PRETTY));
    json_object_put(o);
    return out;
}

#endif
