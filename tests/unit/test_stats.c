/*
 * test_stats.c - the parsers behind `aigwctl usage`: dates and times of
 * --from/--to, and the dimension list of --by.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "master/master.h"

static int64_t
parse_ok(const char *s)
{
    int64_t us = -1;

    assert_int_equal(gw_master_stats_time_parse(s, &us), 0);
    return us;
}

static void
test_dates_are_utc_midnight(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("1970-01-01"), 0);
    assert_int_equal(parse_ok("2024-02-29"), 1709164800LL * 1000000);
    assert_int_equal(parse_ok("2025-01-01"), 1735689600LL * 1000000);
}

static void
test_times_with_zone_and_fraction(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2025-01-01T00:00:00Z"), 1735689600LL * 1000000);
    assert_int_equal(parse_ok("2025-01-01T12:30"), (1735689600LL + 45000) * 1000000);
    assert_int_equal(parse_ok("2025-01-01T12:30:15.25Z"),
                     (1735689600LL + 45015) * 1000000 + 250000);
    /* 14:30 at +02:00 is 12:30 UTC. */
    assert_int_equal(parse_ok("2025-01-01T14:30:00+02:00"), (1735689600LL + 45000) * 1000000);
    assert_int_equal(parse_ok("2025-01-01 12:30:00-0100"), (1735689600LL + 48600) * 1000000);
}

static void
test_bad_times_are_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "2025",
        "2025-1-01",
        "2025-13-01",
        "2025-02-29",
        "2025-04-31",
        "1969-12-31",
        "2025-01-01T",
        "2025-01-01T24:00",
        "2025-01-01T12:60",
        "2025-01-01T12:00:61",
        "2025-01-01T12:00:00.",
        "2025-01-01T12:00Zx",
        "2025-01-01x",
        "2025-01-01T12:00+25:00",
    };
    int64_t us;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_master_stats_time_parse(bad[i], &us) != GW_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void
test_dims_in_order(void **state)
{
    static const char *const names[] = {"key", "model", "target", "status",
                                        "day", "month", "hour",   "byok"};
    int dims[GW_STATS_NDIMS];
    size_t n;

    (void)state;
    assert_int_equal(gw_master_stats_dims_parse("model,day", dims, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(dims[0], GW_STATS_MODEL);
    assert_int_equal(dims[1], GW_STATS_DAY);
    assert_int_equal(
        gw_master_stats_dims_parse("key,model,target,status,day,month,hour,byok", dims, &n), 0);
    assert_int_equal(n, GW_STATS_NDIMS);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(gw_master_stats_dim_name(dims[i]), names[i]);
}

static void
test_bad_dims_are_refused(void **state)
{
    int dims[GW_STATS_NDIMS];
    size_t n;

    (void)state;
    assert_int_equal(gw_master_stats_dims_parse("colour", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("key,", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse(",key", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("keys", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("model,key,model", dims, &n), GW_EEXIST);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dates_are_utc_midnight),
        cmocka_unit_test(test_times_with_zone_and_fraction),
        cmocka_unit_test(test_bad_times_are_refused),
        cmocka_unit_test(test_dims_in_order),
        cmocka_unit_test(test_bad_dims_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
