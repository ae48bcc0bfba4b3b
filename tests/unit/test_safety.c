/*
 * test_safety.c - content safety: each PII detector on true and false
 * cases (check digits included), keywords by case and whole word,
 * regular expressions, masks and restore, the stream window (a phrase
 * split at every position over two chunks is caught; text that matches
 * nothing leaves unchanged, held back no more than the window), and the
 * configuration errors of bad rules with their file, line and column.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "tests/unit/config_load.h"
#include "worker/safety.h"

static struct gw_arena *arena;

static struct gw_worker_safety_def
pii(enum gw_safety_detector d, enum gw_safety_action action)
{
    return (struct gw_worker_safety_def){.name = gw_safety_detector_names[d],
                                         .type = GW_SAFETY_PII,
                                         .detector = d,
                                         .action = action,
                                         .on = GW_SAFETY_ON_INPUT | GW_SAFETY_ON_OUTPUT,
                                         .stat = {-1, -1}};
}

/* A keyword rule that blocks answers. */
static struct gw_worker_safety_def
keywords_block(const char *const *words, size_t n, bool whole_word)
{
    return (struct gw_worker_safety_def){.name = "kw",
                                         .type = GW_SAFETY_KEYWORDS,
                                         .action = GW_SAFETY_BLOCK,
                                         .on = GW_SAFETY_ON_OUTPUT,
                                         .whole_word = whole_word,
                                         .words = words,
                                         .nwords = n,
                                         .stat = {-1, -1}};
}

/* The text as the rules of defs leave it on input; NULL when blocked. */
static const char *
scan(const struct gw_worker_safety_def *defs, size_t n, const char *text)
{
    struct gw_safety_engine *e = gw_worker_safety_engine_create(defs, n, 256);
    const char *out;
    size_t len;

    assert_non_null(e);
    struct gw_safety_req *st = gw_worker_safety_req_create(e, UINT64_MAX, arena, NULL, "test");
    int blocked = gw_worker_safety_scan(st, GW_SAFETY_INPUT, text, strlen(text), &out, &len);
    const char *res = blocked >= 0 ? NULL : gw_arena_strndup(arena, out, len);
    gw_worker_safety_engine_destroy(e);
    return res;
}

/* Does detector d find something in text? */
static bool
detects(enum gw_safety_detector d, const char *text)
{
    struct gw_worker_safety_def def = pii(d, GW_SAFETY_BLOCK);

    return scan(&def, 1, text) == NULL;
}

static void
check_sums(void **state)
{
    (void)state;
    assert_true(gw_safety_luhn_ok("4111111111111111", 16));
    assert_true(gw_safety_luhn_ok("4111 1111 1111 1111", 19));
    assert_true(gw_safety_luhn_ok("5500-0000-0000-0004", 19));
    assert_false(gw_safety_luhn_ok("4111111111111112", 16));
    assert_false(gw_safety_luhn_ok("411111111111", 12)); /* too short */
    assert_true(gw_safety_iban_ok("DE89370400440532013000", 22));
    assert_true(gw_safety_iban_ok("GB82 WEST 1234 5698 7654 32", 27));
    assert_false(gw_safety_iban_ok("DE89370400440532013001", 22));
    assert_false(gw_safety_iban_ok("GB82 WEST 1234 5698 7654 33", 27));
    assert_true(gw_safety_cn_id_ok("11010519491231002X", 18));
    assert_true(gw_safety_cn_id_ok("110105194912310021", 18) == false);
    assert_true(gw_safety_cn_id_ok("440524188001010014", 18));
    assert_false(gw_safety_cn_id_ok("440524188001010015", 18));
}

static void
detector_email(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_EMAIL, "write to bob.smith+x@example.co.uk today"));
    assert_true(detects(GW_DETECT_EMAIL, "<alice@mail.example.org>"));
    assert_false(detects(GW_DETECT_EMAIL, "an @ sign alone, or user@localhost"));
    assert_false(detects(GW_DETECT_EMAIL, "not@an-address"));
}

static void
detector_phone(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_PHONE, "call +44 20 7946 0958 now"));
    assert_true(detects(GW_DETECT_PHONE, "call (415) 555-2671"));
    assert_true(detects(GW_DETECT_PHONE, "call 415-555-2671"));
    assert_true(detects(GW_DETECT_PHONE, "手机 13812345678"));
    assert_false(detects(GW_DETECT_PHONE, "version 1.2.3, 42 apples"));
    assert_false(detects(GW_DETECT_PHONE, "+12 34")); /* too few digits */
}

static void
detector_credit_card(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_CREDIT_CARD, "card 4111 1111 1111 1111 exp 12/29"));
    assert_true(detects(GW_DETECT_CREDIT_CARD, "card 5500-0000-0000-0004."));
    assert_true(detects(GW_DETECT_CREDIT_CARD, "378282246310005"));
    assert_false(detects(GW_DETECT_CREDIT_CARD, "card 4111 1111 1111 1112"));
    assert_false(detects(GW_DETECT_CREDIT_CARD, "order 1234567890123"));
}

static void
detector_iban(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_IBAN, "pay to DE89 3704 0044 0532 0130 00 please"));
    assert_true(detects(GW_DETECT_IBAN, "IBAN: GB82WEST12345698765432"));
    assert_false(detects(GW_DETECT_IBAN, "pay to DE89 3704 0044 0532 0130 01 please"));
    assert_false(detects(GW_DETECT_IBAN, "GB82WEST12345698765433"));
}

static void
detector_cn_id(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_CN_ID, "身份证 11010519491231002X。"));
    assert_true(detects(GW_DETECT_CN_ID, "id 11010519491231002x"));
    assert_false(detects(GW_DETECT_CN_ID, "id 110105194912310021")); /* wrong check digit */
    assert_false(detects(GW_DETECT_CN_ID, "id 110105194913310028")); /* month 13 */
}

static void
detector_ip(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_IPV4, "host 192.168.1.20 is down"));
    assert_true(detects(GW_DETECT_IPV4, "8.8.8.8."));
    assert_false(detects(GW_DETECT_IPV4, "version 1.2.3.456"));
    assert_false(detects(GW_DETECT_IPV4, "1.2.3"));
    assert_true(detects(GW_DETECT_IPV6, "ping 2001:db8::8a2e:370:7334 now"));
    assert_true(detects(GW_DETECT_IPV6, "loopback ::1."));
    assert_true(detects(GW_DETECT_IPV6, "fe80::1"));
    assert_false(detects(GW_DETECT_IPV6, "at 12:30:45 sharp"));
    assert_false(detects(GW_DETECT_IPV6, "std::vector<int>"));
    assert_false(detects(GW_DETECT_IPV6, "1:2:3:4:5:6:7:8:9"));
}

static void
detector_keys(void **state)
{
    (void)state;
    assert_true(detects(GW_DETECT_API_KEY, "key=sk-proj-abcdefghijklmnopqrstuvwx123"));
    assert_true(detects(GW_DETECT_API_KEY, "AKIAIOSFODNN7EXAMPLE"));
    assert_true(detects(GW_DETECT_API_KEY, "ghp_0123456789abcdefghijklmnopqrstuvwxyz"));
    assert_false(detects(GW_DETECT_API_KEY, "ask-me-anything sk-short"));
    assert_true(detects(GW_DETECT_BEARER, "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def"));
    assert_false(detects(GW_DETECT_BEARER, "the bearer of bad news"));
}

static void
mask_numbers_values_and_fixed_masks(void **state)
{
    struct gw_worker_safety_def defs[2] = {pii(GW_DETECT_EMAIL, GW_SAFETY_MASK),
                                           pii(GW_DETECT_CREDIT_CARD, GW_SAFETY_MASK)};

    (void)state;
    defs[1].mask = "****";
    assert_string_equal(scan(defs, 2, "a@b.io, c@d.io, a@b.io, 4111111111111111"),
                        "[EMAIL_1], [EMAIL_2], [EMAIL_1], ****");
    assert_string_equal(scan(defs, 2, "nothing here"), "nothing here");
}

static void
keywords_case_and_whole_word(void **state)
{
    static const char *const words[] = {"secret plan", "foo", "c++"};
    struct gw_worker_safety_def def = {.name = "kw",
                                       .type = GW_SAFETY_KEYWORDS,
                                       .action = GW_SAFETY_MASK,
                                       .on = GW_SAFETY_ON_INPUT,
                                       .words = words,
                                       .nwords = 3,
                                       .mask = "#",
                                       .stat = {-1, -1}};

    (void)state;
    assert_string_equal(scan(&def, 1, "The SECRET Plan, foo and Foo"), "The #, # and #");
    assert_string_equal(scan(&def, 1, "food and c++"), "#d and #");
    def.whole_word = true;
    assert_string_equal(scan(&def, 1, "food, foo, afoo, foo_x, (foo)"),
                        "food, #, afoo, foo_x, (#)");
    assert_string_equal(scan(&def, 1, "Ünïcode fooé foo"), "Ünïcode fooé #");
    def.action = GW_SAFETY_BLOCK;
    assert_null(scan(&def, 1, "no more secret plans? secret plan!"));
    assert_non_null(scan(&def, 1, "no more secret plans"));
}

static void
regex_rules(void **state)
{
    struct gw_worker_safety_def def = {.name = "leak",
                                       .type = GW_SAFETY_REGEX,
                                       .action = GW_SAFETY_BLOCK,
                                       .on = GW_SAFETY_ON_INPUT,
                                       .pattern = "(?i)internal\\s+use\\s+only",
                                       .stat = {-1, -1}};

    (void)state;
    assert_null(scan(&def, 1, "for INTERNAL use\tonly"));
    assert_non_null(scan(&def, 1, "for internal users only"));
    def.action = GW_SAFETY_FLAG;
    assert_string_equal(scan(&def, 1, "internal use only"), "internal use only");
}

/* ------------------------------------------------------------- streams */

struct sink {
    struct gw_buf out;
};

static int
sink_emit(void *ctx, const char *data, size_t len)
{
    return gw_buf_append(&((struct sink *)ctx)->out, data, len);
}

static char *
chunk(const char *text)
{
    struct json_object *s = json_object_new_string(text);
    char *ev = gw_arena_printf(arena,
                               "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
                               "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
                               "\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n",
                               json_object_to_json_string(s));
    json_object_put(s);
    return ev;
}

#define FINISH                                                                                     \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","     \
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define DONE "data: [DONE]\n\n"

/* The content of every chunk in out, joined; *error set when an error
 * event came. */
static char *
stream_text(const struct gw_buf *out, bool *error)
{
    struct gw_buf t = {0};
    char *copy = gw_arena_strndup(arena, out->data ? out->data : "", out->len), *save = NULL;

    *error = false;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "data: ", 6) != 0 || strcmp(line + 6, "[DONE]") == 0)
            continue;
        struct json_object *o = json_tokener_parse(line + 6), *c, *v;
        assert_non_null(o);
        if (json_object_object_get_ex(o, "error", &v)) {
            *error = true;
            assert_non_null(strstr(json_object_to_json_string(v), "content_blocked"));
        } else if (json_object_object_get_ex(o, "choices", &c) && json_object_array_length(c) > 0 &&
                   json_object_object_get_ex(json_object_array_get_idx(c, 0), "delta", &v) &&
                   json_object_object_get_ex(v, "content", &v)) {
            gw_buf_append(&t, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        }
        json_object_put(o);
    }
    char *res = gw_arena_strndup(arena, t.data ? t.data : "", t.len);
    gw_buf_free(&t);
    return res;
}

/* Stream text in two chunks cut at cut, then finish and [DONE]; returns
 * the client's text, *error set when the stream was blocked. */
static char *
stream_two(struct gw_safety_engine *e, const char *text, size_t cut, bool *error)
{
    struct sink s = {0};
    struct gw_safety_req *st = gw_worker_safety_req_create(e, UINT64_MAX, arena, NULL, "t");
    char *a = gw_arena_strndup(arena, text, cut), *b = gw_arena_strdup(arena, text + cut);
    int rc = gw_worker_safety_stream(st, chunk(a), strlen(chunk(a)), sink_emit, &s);

    if (rc == 0)
        rc = gw_worker_safety_stream(st, chunk(b), strlen(chunk(b)), sink_emit, &s);
    if (rc == 0)
        rc = gw_worker_safety_stream(st, FINISH DONE, strlen(FINISH DONE), sink_emit, &s);
    if (rc == 0)
        rc = gw_worker_safety_stream_end(st, sink_emit, &s);
    assert_true(rc == 0 || rc == GW_EPERM);
    char *res = stream_text(&s.out, error);
    assert_int_equal(*error, rc == GW_EPERM);
    gw_buf_free(&s.out);
    return res;
}

static void
stream_phrase_split_at_every_position_is_blocked(void **state)
{
    static const char *const words[] = {"secret plan"};
    const struct gw_worker_safety_def defs[] = {
        keywords_block(words, 1, true),
        {.name = "leak",
         .type = GW_SAFETY_REGEX,
         .action = GW_SAFETY_BLOCK,
         .on = GW_SAFETY_ON_OUTPUT,
         .pattern = "(?i)internal use only",
         .stat = {-1, -1}},
    };
    static const char *const texts[] = {
        "Here is the Secret Plan: attack at dawn.",
        "This is for INTERNAL USE ONLY, sorry.",
    };
    struct gw_safety_engine *e = gw_worker_safety_engine_create(defs, 2, 256);
    bool error;

    (void)state;
    for (size_t t = 0; t < 2; t++) {
        const char *phrase = t == 0 ? "Secret Plan" : "INTERNAL USE ONLY";
        for (size_t cut = 0; cut <= strlen(texts[t]); cut++) {
            char *got = stream_two(e, texts[t], cut, &error);
            if (!error)
                fail_msg("not blocked with the cut at %zu: \"%s\"", cut, got);
            assert_null(strstr(got, phrase));
        }
    }
    /* Not the phrase as a whole word: passes, whole. */
    for (size_t cut = 0; cut <= 24; cut++)
        assert_string_equal(stream_two(e, "the secret planet is big", cut, &error),
                            "the secret planet is big");
    gw_worker_safety_engine_destroy(e);
}

/* text streamed in two chunks, cut at every position, comes out as
 * whole, never blocked. */
static void
assert_stream_as_whole(struct gw_safety_engine *e, const char *text, const char *whole)
{
    bool error;

    for (size_t cut = 0; cut <= strlen(text); cut++) {
        char *got = stream_two(e, text, cut, &error);
        assert_false(error);
        if (strcmp(got, whole) != 0)
            fail_msg("cut at %zu: \"%s\", whole: \"%s\"", cut, got, whole);
    }
}

static void
stream_masks_overlapping_matches_as_the_whole_answer(void **state)
{
    /* Over a whole answer the phone rule goes first.  It takes the digits
     * up to and with what looks like an IP address, and its mask ends the
     * digits of a card number before it (16, which pass the Luhn check,
     * not 19 that do not).  A stream cut anywhere must not let a later
     * rule decide on text the phone rule still holds back. */
    struct gw_worker_safety_def defs[3] = {pii(GW_DETECT_PHONE, GW_SAFETY_MASK),
                                           pii(GW_DETECT_CREDIT_CARD, GW_SAFETY_MASK),
                                           pii(GW_DETECT_IPV4, GW_SAFETY_MASK)};
    static const char *const texts[] = {"call +1 415 555 10.0.0.1 a now",
                                        "card 4111 1111 1111 14 415 555 0100; ok"};
    struct gw_safety_engine *e = gw_worker_safety_engine_create(defs, 3, 256);

    (void)state;
    for (size_t t = 0; t < 2; t++) {
        const char *whole = scan(defs, 3, texts[t]);
        assert_non_null(whole);
        assert_null(strstr(whole, t == 0 ? "415" : "4111"));
        assert_stream_as_whole(e, texts[t], whole);
    }
    gw_worker_safety_engine_destroy(e);
}

static void
stream_later_masks_do_not_change_what_an_earlier_rule_looks_back_at(void **state)
{
    /* Over a whole answer a rule looks behind its match at the text as
     * the rules before it left it, never at a later rule's mask.
     * - "only415": the phone rule's lookbehind sees a letter, no phone
     *   number; had the later rule's "###" replaced "only" first, it
     *   would see '#' and mask the digits (the card rule holding them
     *   makes the phone rule look at them again).
     * - "SSN 123-45-6789": the number rule looks behind for "SSN "; had
     *   the later rule masked "SSN" first, the number would go out.
     * - And a rule goes on after its own mask, on to the next match. */
    struct gw_worker_safety_def defs[] = {
        pii(GW_DETECT_PHONE, GW_SAFETY_MASK),
        pii(GW_DETECT_CREDIT_CARD, GW_SAFETY_MASK),
        {.name = "ssn",
         .type = GW_SAFETY_REGEX,
         .action = GW_SAFETY_MASK,
         .on = GW_SAFETY_ON_INPUT | GW_SAFETY_ON_OUTPUT,
         .pattern = "(?<=SSN )[0-9]{3}-[0-9]{2}-[0-9]{4}",
         .stat = {-1, -1}},
        {.name = "internal",
         .type = GW_SAFETY_REGEX,
         .action = GW_SAFETY_MASK,
         .on = GW_SAFETY_ON_INPUT | GW_SAFETY_ON_OUTPUT,
         .pattern = "(?i)internal\\s+use\\s+only|\\bSSN\\b",
         .mask = "###",
         .stat = {-1, -1}},
    };
    static const char *const texts[] = {"INTERNAL use\tonly415 555 0100 ok",
                                        "my SSN 123-45-6789, keep it",
                                        "internal use only\finternal use only"};
    static const char *const wholes[] = {"###415 555 0100 ok", "my ### [SSN_1], keep it",
                                         "###\f###"};
    struct gw_safety_engine *e = gw_worker_safety_engine_create(defs, 4, 256);

    (void)state;
    for (size_t t = 0; t < 3; t++) {
        assert_string_equal(scan(defs, 4, texts[t]), wholes[t]);
        assert_stream_as_whole(e, texts[t], wholes[t]);
    }
    gw_worker_safety_engine_destroy(e);
}

static void
stream_cut_inside_a_character_reads_as_the_whole_answer(void **state)
{
    /* "plan" runs on into a CJK letter: no whole word, no block.  Cut in
     * the middle of that letter, its first byte alone must not read as
     * the end of a word. */
    static const char *const words[] = {"secret plan"};
    const struct gw_worker_safety_def def = keywords_block(words, 1, true);
    const char *text = "the secret plan\xe9\x96\x8c is here";
    struct gw_safety_engine *e = gw_worker_safety_engine_create(&def, 1, 256);
    bool error;

    (void)state;
    for (size_t cut = 0; cut <= strlen(text); cut++) {
        char *got = stream_two(e, text, cut, &error);
        if (error)
            fail_msg("blocked with the cut at %zu", cut);
        assert_string_equal(got, text);
    }
    gw_worker_safety_engine_destroy(e);
}

static void
stream_of_a_provider_shape_of_its_own_is_passed_on(void **state)
{
    /* Text held back, then a finish whose delta is no object, and a
     * choice that finishes without ever holding text: the filter passes
     * the events on instead of asking json-c to treat a string as an
     * object (which aborts the worker). */
    struct gw_worker_safety_def def = pii(GW_DETECT_EMAIL, GW_SAFETY_MASK);
    const char *events[] = {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mail ana@exa\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":\"x\",\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":5,\"finish_reason\":\"stop\"}]}\n\n",
        DONE,
    };
    struct sink s = {0};
    struct gw_safety_engine *e;
    bool error;

    (void)state;
    def.on = GW_SAFETY_ON_OUTPUT;
    e = gw_worker_safety_engine_create(&def, 1, 256);
    struct gw_safety_req *st = gw_worker_safety_req_create(e, UINT64_MAX, arena, NULL, "t");
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
        assert_int_equal(gw_worker_safety_stream(st, events[i], strlen(events[i]), sink_emit, &s),
                         0);
    assert_int_equal(gw_worker_safety_stream_end(st, sink_emit, &s), 0);
    assert_string_equal(stream_text(&s.out, &error), "mail ana@exa");
    assert_false(error);
    gw_buf_free(&s.out);
    gw_worker_safety_engine_destroy(e);
}

static void
stream_mask_split_at_every_position(void **state)
{
    struct gw_worker_safety_def def = pii(GW_DETECT_EMAIL, GW_SAFETY_MASK);
    const char *text = "mail bob@example.com or not";
    struct gw_safety_engine *e;
    bool error;

    (void)state;
    def.on = GW_SAFETY_ON_OUTPUT;
    e = gw_worker_safety_engine_create(&def, 1, 256);
    for (size_t cut = 0; cut <= strlen(text); cut++)
        assert_string_equal(stream_two(e, text, cut, &error), "mail [EMAIL_1] or not");
    gw_worker_safety_engine_destroy(e);
}

static void
stream_without_matches_passes_unchanged_with_bounded_delay(void **state)
{
    static const char *const words[] = {"forbidden phrase here"};
    const struct gw_worker_safety_def def = keywords_block(words, 1, false);
    const struct gw_worker_safety_def re = {.name = "re",
                                            .type = GW_SAFETY_REGEX,
                                            .action = GW_SAFETY_BLOCK,
                                            .on = GW_SAFETY_ON_OUTPUT,
                                            .pattern = "a[^z]*z",
                                            .stat = {-1, -1}};
    struct gw_buf all = {0};
    struct sink s = {0};
    bool error;

    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        struct gw_safety_engine *e = gw_worker_safety_engine_create(pass ? &re : &def, 1, 64);
        struct gw_safety_req *st = gw_worker_safety_req_create(e, 1, arena, NULL, "t");
        all.len = s.out.len = 0;
        for (int i = 0; i < 200; i++) {
            /* "a" begins a possible match of "a[^z]*z" that never ends. */
            char *piece = gw_arena_printf(arena, "word%d forbidden a ", i);
            gw_buf_append(&all, piece, strlen(piece));
            assert_int_equal(
                gw_worker_safety_stream(st, chunk(piece), strlen(chunk(piece)), sink_emit, &s), 0);
            size_t out = strlen(stream_text(&s.out, &error));
            assert_false(error);
            /* Held back: no more than the window (64 bytes here, and the
             * keyword's own length for the keyword rule). */
            assert_true(all.len - out <= (pass ? 64u : strlen(words[0]) + 16));
        }
        assert_int_equal(gw_worker_safety_stream(st, FINISH, strlen(FINISH), sink_emit, &s), 0);
        gw_buf_append(&all, "", 1);
        assert_string_equal(stream_text(&s.out, &error), all.data);
        gw_worker_safety_engine_destroy(e);
    }
    gw_buf_free(&all);
    gw_buf_free(&s.out);
}

static void
restore_puts_masked_input_back_in_the_answer(void **state)
{
    struct gw_worker_safety_def def = pii(GW_DETECT_EMAIL, GW_SAFETY_MASK);
    struct gw_safety_engine *e;
    struct gw_safety_req *st;
    const char *out;
    size_t len;
    bool error;

    (void)state;
    def.restore = true;
    def.on = GW_SAFETY_ON_INPUT;
    e = gw_worker_safety_engine_create(&def, 1, 256);
    st = gw_worker_safety_req_create(e, 1, arena, NULL, "t");
    const char *in = "from bob@example.com to al@example.org";
    assert_int_equal(gw_worker_safety_scan(st, GW_SAFETY_INPUT, in, strlen(in), &out, &len), -1);
    assert_string_equal(gw_arena_strndup(arena, out, len), "from [EMAIL_1] to [EMAIL_2]");
    assert_true(gw_worker_safety_req_wants(st, GW_SAFETY_OUTPUT));
    const char *ans = "Dear [EMAIL_2], [EMAIL_1] wrote; [EMAIL_3] is unknown.";
    assert_int_equal(gw_worker_safety_scan(st, GW_SAFETY_OUTPUT, ans, strlen(ans), &out, &len), -1);
    assert_string_equal(gw_arena_strndup(arena, out, len),
                        "Dear al@example.org, bob@example.com wrote; [EMAIL_3] is unknown.");

    /* Streamed, the placeholder split at every position. */
    for (size_t cut = 0; cut <= strlen(ans); cut++) {
        struct sink s = {0};
        char *a = gw_arena_strndup(arena, ans, cut);
        assert_int_equal(gw_worker_safety_stream(st, chunk(a), strlen(chunk(a)), sink_emit, &s), 0);
        assert_int_equal(
            gw_worker_safety_stream(st, chunk(ans + cut), strlen(chunk(ans + cut)), sink_emit, &s),
            0);
        assert_int_equal(gw_worker_safety_stream_end(st, sink_emit, &s), 0);
        assert_string_equal(stream_text(&s.out, &error),
                            "Dear al@example.org, bob@example.com wrote; [EMAIL_3] is unknown.");
        gw_buf_free(&s.out);
    }
    gw_worker_safety_engine_destroy(e);
}

/* ------------------------------------------------------------- config */

#define SAFETY(rules) MINIMAL "safety:\n  rules:\n" rules

static void
config_rules_load(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(SAFETY("    - { name: a, type: pii, detector: iban, on: [input], action: mask, "
                         "restore: true }\n"
                         "    - { name: b, type: keywords, words: [x, y z], whole_word: yes }\n"
                         "    - { name: c, type: regex, pattern: \"(?i)x+\", on: output }\n"
                         "  allow: { keys: [key_1], tenants: [acme], models: [] }\n"
                         "  stream_window: 1k\n"));
    assert_int_equal(cfg->safety.nrules, 3);
    assert_int_equal(cfg->safety.rules[0].on, GW_SAFETY_ON_INPUT);
    assert_int_equal(cfg->safety.rules[1].action, GW_SAFETY_BLOCK);
    assert_int_equal(cfg->safety.rules[1].nwords, 2);
    assert_int_equal(cfg->safety.rules[2].on, GW_SAFETY_ON_OUTPUT);
    assert_int_equal(cfg->safety.stream_window, 1024);
    assert_int_equal(cfg->safety.nallow_tenants, 1);
    assert_int_equal(cfg->models[0].safety_rules, 7); /* every rule */
    gw_config_free(cfg);

    cfg = load_ok(PROVIDERS "models:\n  - name: demo\n    safety: [c]\n    targets: [{ provider: "
                            "local, model: m }]\n  - name: none\n    safety: []\n    targets: [{ "
                            "provider: local, model: m }]\n"
                            "safety:\n  rules:\n    - { name: a, type: pii, detector: email }\n"
                            "    - { name: c, type: pii, detector: cn_id }\n");
    assert_int_equal(cfg->models[0].safety_rules, 2);
    assert_int_equal(cfg->models[1].safety_rules, 0);
    gw_config_free(cfg);
}

static void
config_bad_rules_are_refused_with_their_position(void **state)
{
    char msg[256];

    (void)state;
    /* The column where PCRE2 found the problem: the end of "ab(c". */
    expect_error(SAFETY("    - { name: r, type: regex, pattern: \"ab(c\" }\n"), 12, 45,
                 "\"safety.rules[0].pattern\": invalid regular expression at offset 4: missing "
                 "closing parenthesis");
    expect_error(SAFETY("    - { name: r, type: pii, detector: passport }\n"), 12, 39,
                 "\"safety.rules[0].detector\": unknown detector \"passport\" (known: email, "
                 "phone, credit_card, iban, cn_id, ipv4, ipv6, api_key, bearer)");
    expect_error(SAFETY("    - { name: r, type: keywords, file: /nonexistent/words.txt }\n"), 12,
                 40,
                 "cannot read keyword file \"/nonexistent/words.txt\": No such file or directory");
    expect_error(SAFETY("    - { name: r, type: regex }\n"), 12, 24,
                 "\"safety.rules[0]\": a regex rule needs a pattern");
    expect_error(SAFETY("    - { name: r, type: pii, detector: email, pattern: x }\n"), 12, 46,
                 "\"safety.rules[0].pattern\" is for rules of type regex");
    expect_error(SAFETY("    - { name: r, type: pii, detector: email, mask: x }\n"), 12, 46,
                 "\"safety.rules[0].mask\" is for rules with action mask");
    expect_error(SAFETY("    - { name: r, type: pii, detector: email }\n"
                        "    - { name: r, type: pii, detector: iban }\n"),
                 13, 15, "duplicate safety rule name \"r\"");
    expect_error(SAFETY("    - { name: r, type: pii, detector: email, on: [sideways] }\n"), 12, 51,
                 "\"safety.rules[0].on\": unknown direction \"sideways\" (known: input, output)");
    snprintf(msg, sizeof(msg), "no safety rule named \"nope\" (declared: r)");
    expect_error(PROVIDERS "models:\n  - name: demo\n    safety: [nope]\n    targets: [{ provider: "
                           "local, model: m }]\n"
                           "safety:\n  rules:\n    - { name: r, type: pii, detector: email }\n",
                 7, 14, msg);
}

static int
setup(void **state)
{
    (void)state;
    arena = gw_arena_create(65536);
    gw_log_level = GW_LOG_WARN;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    gw_arena_destroy(arena);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_sums),
        cmocka_unit_test(detector_email),
        cmocka_unit_test(detector_phone),
        cmocka_unit_test(detector_credit_card),
        cmocka_unit_test(detector_iban),
        cmocka_unit_test(detector_cn_id),
        cmocka_unit_test(detector_ip),
        cmocka_unit_test(detector_keys),
        cmocka_unit_test(mask_numbers_values_and_fixed_masks),
        cmocka_unit_test(keywords_case_and_whole_word),
        cmocka_unit_test(regex_rules),
        cmocka_unit_test(stream_phrase_split_at_every_position_is_blocked),
        cmocka_unit_test(stream_masks_overlapping_matches_as_the_whole_answer),
        cmocka_unit_test(stream_later_masks_do_not_change_what_an_earlier_rule_looks_back_at),
        cmocka_unit_test(stream_cut_inside_a_character_reads_as_the_whole_answer),
        cmocka_unit_test(stream_of_a_provider_shape_of_its_own_is_passed_on),
        cmocka_unit_test(stream_mask_split_at_every_position),
        cmocka_unit_test(stream_without_matches_passes_unchanged_with_bounded_delay),
        cmocka_unit_test(restore_puts_masked_input_back_in_the_answer),
        cmocka_unit_test(config_rules_load),
        cmocka_unit_test(config_bad_rules_are_refused_with_their_position),
    };

    return cmocka_run_group_tests_name("safety", tests, setup, teardown);
}
