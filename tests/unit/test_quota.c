/*
 * test_quota.c - quota periods (UTC days and months, their ends across a
 * year and a leap day), the stored form of a quota, and the shm counters
 * that roll over to a new period.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <json-c/json.h>

#include "shm/shm.h"

/* 2024-02-29T13:45:00Z: a leap day. */
#define LEAP_DAY 1709214300LL
/* 2026-12-31T23:59:59Z and a second later. */
#define YEAR_END 1798761599LL

static void
days_start_and_end_at_utc_midnight(void **state)
{
    (void)state;
    int64_t start = gw_quota_period_start(GW_QUOTA_DAY, LEAP_DAY);
    int64_t end = gw_quota_period_end(GW_QUOTA_DAY, LEAP_DAY);

    assert_int_equal(start, 1709164800LL); /* 2024-02-29T00:00:00Z */
    assert_int_equal(end, 1709251200LL);   /* 2024-03-01T00:00:00Z */
    assert_int_equal(gw_quota_period_id(GW_QUOTA_DAY, start),
                     gw_quota_period_id(GW_QUOTA_DAY, end - 1));
    assert_int_equal(gw_quota_period_id(GW_QUOTA_DAY, end),
                     gw_quota_period_id(GW_QUOTA_DAY, start) + 1);
    assert_true(gw_quota_period_id(GW_QUOTA_DAY, 0) > 0);
}

static void
months_follow_the_calendar(void **state)
{
    (void)state;
    assert_int_equal(gw_quota_period_start(GW_QUOTA_MONTH, LEAP_DAY), 1706745600LL); /* 02-01 */
    assert_int_equal(gw_quota_period_end(GW_QUOTA_MONTH, LEAP_DAY), 1709251200LL);   /* 03-01 */
    /* December ends at the next year's January 1st. */
    assert_int_equal(gw_quota_period_end(GW_QUOTA_MONTH, YEAR_END), YEAR_END + 1);
    assert_int_equal(gw_quota_period_id(GW_QUOTA_MONTH, YEAR_END + 1),
                     gw_quota_period_id(GW_QUOTA_MONTH, YEAR_END) + 1);
    assert_int_equal(gw_quota_period_id(GW_QUOTA_MONTH, 0), 1);
}

static void
total_never_ends(void **state)
{
    (void)state;
    assert_int_equal(gw_quota_period_id(GW_QUOTA_TOTAL, LEAP_DAY), 1);
    assert_int_equal(gw_quota_period_id(GW_QUOTA_TOTAL, YEAR_END), 1);
    assert_int_equal(gw_quota_period_start(GW_QUOTA_TOTAL, LEAP_DAY), 0);
    assert_int_equal(gw_quota_period_end(GW_QUOTA_TOTAL, LEAP_DAY), 0);
}

static void
period_names_parse(void **state)
{
    (void)state;
    assert_int_equal(gw_quota_period_parse("day"), GW_QUOTA_DAY);
    assert_int_equal(gw_quota_period_parse("month"), GW_QUOTA_MONTH);
    assert_int_equal(gw_quota_period_parse("total"), GW_QUOTA_TOTAL);
    assert_int_equal(gw_quota_period_parse("week"), -1);
    assert_int_equal(gw_quota_period_parse(NULL), -1);
}

static void
stored_form_round_trips(void **state)
{
    (void)state;
    struct gw_quota q = {.scope = "tenant:acme",
                         .period = GW_QUOTA_MONTH,
                         .tokens = 500000,
                         .calls = -1,
                         .alert_pct = 80,
                         .alerted = 0};
    struct gw_quota back;
    char name[128];
    struct json_object *o = gw_quota_encode(&q);

    assert_int_equal(gw_quota_decode(json_object_to_json_string(o), &back), 0);
    json_object_put(o);
    assert_string_equal(back.scope, "tenant:acme");
    assert_int_equal(back.period, GW_QUOTA_MONTH);
    assert_int_equal(back.tokens, 500000);
    assert_int_equal(back.calls, -1);
    assert_int_equal(back.alert_pct, 80);
    assert_true(gw_quota_name(&back, name, sizeof(name)));
    assert_string_equal(name, "tenant:acme|month");
    assert_false(gw_quota_name(&back, name, 8));

    assert_int_equal(gw_quota_decode("{\"scope\":\"key:k\",\"period\":\"week\"}", &back),
                     GW_EINVAL);
    assert_int_equal(gw_quota_decode("[1]", &back), GW_EINVAL);
    assert_int_equal(gw_quota_decode("{\"period\":\"day\"}", &back), GW_EINVAL);
}

static void
counters_roll_over_to_a_new_period(void **state)
{
    (void)state;
    struct gw_shm_geometry geo = {
        .nworkers = 2, .nstats = 4, .nbuckets = 4, .nquotas = 4, .nring = 4, .gen_size = 4096};
    struct gw_shm shm;
    bool attached;
    char name[64];

    snprintf(name, sizeof(name), "/aigw-test-quota-%d", (int)getpid());
    gw_shm_unlink(name);
    assert_int_equal(gw_shm_open(name, &geo, &shm, &attached), 0);
    struct gw_shm_quota *c = gw_shm_quota_get(&shm, "key:a|day", true);
    assert_non_null(c);
    assert_null(gw_shm_quota_get(&shm, "key:b|day", false));
    gw_shm_quota_roll(c, 100);
    atomic_fetch_add(&c->tokens, 70);
    atomic_fetch_add(&c->calls, 3);
    gw_shm_quota_roll(c, 100); /* the same period: kept */
    assert_int_equal(atomic_load(&c->tokens), 70);
    gw_shm_quota_roll(c, 99); /* a late worker's older period: kept */
    assert_int_equal(atomic_load(&c->calls), 3);
    assert_ptr_equal(gw_shm_quota_get(&shm, "key:a|day", false), c);
    gw_shm_quota_roll(c, 101);
    assert_int_equal(atomic_load(&c->period), 101);
    assert_int_equal(atomic_load(&c->tokens), 0);
    assert_int_equal(atomic_load(&c->calls), 0);
    /* The table is bounded: a fifth name does not fit. */
    assert_non_null(gw_shm_quota_get(&shm, "key:b|day", true));
    assert_non_null(gw_shm_quota_get(&shm, "key:c|day", true));
    assert_non_null(gw_shm_quota_get(&shm, "key:d|day", true));
    assert_null(gw_shm_quota_get(&shm, "key:e|day", true));
    gw_shm_close(&shm);
    gw_shm_unlink(name);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(days_start_and_end_at_utc_midnight),
        cmocka_unit_test(months_follow_the_calendar),
        cmocka_unit_test(total_never_ends),
        cmocka_unit_test(period_names_parse),
        cmocka_unit_test(stored_form_round_trips),
        cmocka_unit_test(counters_roll_over_to_a_new_period),
    };

    gw_log_init("test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
