/*
 * test_conflimits.c - the rate-limit keys of the configuration file: the
 * top-level limits.key and limits.model defaults, a model's own limits
 * (which override limits.model field by field), their absence (unlimited)
 * and the exact errors of bad values.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/config_load.h"

/* Two models from line 4; "extra" goes into the first one's mapping. */
#define TWO_MODELS(extra)                                                                          \
    PROVIDERS "models:\n"                                                                          \
              "  - { name: a, targets: [{ provider: local, model: m }]" extra " }\n"               \
              "  - { name: b, targets: [{ provider: local, model: m }] }\n"

static void
limits_absent_mean_unlimited(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MINIMAL);

    assert_int_equal(cfg->key_limits.rpm, 0);
    assert_int_equal(cfg->key_limits.tpm, 0);
    assert_int_equal(cfg->models[0].limits.rpm, 0);
    assert_int_equal(cfg->models[0].limits.tpm, 0);
    gw_config_free(cfg);
}

static void
top_level_limits_load_and_models_inherit_them(void **state)
{
    (void)state;
    struct gw_config *cfg =
        load_ok("limits: { key: { rpm: 60, tpm: 10000 }, model: { rpm: 600 } }\n" TWO_MODELS(
            ", limits: { tpm: 5000 }"));

    assert_int_equal(cfg->key_limits.rpm, 60);
    assert_int_equal(cfg->key_limits.tpm, 10000);
    assert_int_equal(cfg->model_limits.rpm, 600);
    assert_int_equal(cfg->model_limits.tpm, 0);
    /* a sets tpm only: its rpm is the default's. */
    assert_int_equal(cfg->models[0].limits.rpm, 600);
    assert_int_equal(cfg->models[0].limits.tpm, 5000);
    assert_int_equal(cfg->models[1].limits.rpm, 600);
    assert_int_equal(cfg->models[1].limits.tpm, 0);
    gw_config_free(cfg);
}

static void
model_limit_of_zero_lifts_the_default(void **state)
{
    (void)state;
    struct gw_config *cfg =
        load_ok("limits: { model: { rpm: 100, tpm: 100 } }\n" TWO_MODELS(", limits: { rpm: 0 }"));

    assert_int_equal(cfg->models[0].limits.rpm, 0);
    assert_int_equal(cfg->models[0].limits.tpm, 100);
    gw_config_free(cfg);
}

static void
limit_values_are_checked(void **state)
{
    (void)state;
    expect_error("limits: { key: { rpm: -1 } }\n" MINIMAL, 1, 23,
                 "\"limits.key.rpm\" must be a whole number (got \"-1\")");
    expect_error("limits: { key: { tpm: 2000000000 } }\n" MINIMAL, 1, 23,
                 "\"limits.key.tpm\" must be between 0 and 1000000000 (got 2000000000)");
    expect_error("limits: { group: { rpm: 1 } }\n" MINIMAL, 1, 11,
                 "unknown key \"group\" in limits (expected one of: key, user, tenant, model)");
    expect_error(TWO_MODELS(", limits: { rps: 1 }"), 6, 68,
                 "unknown key \"rps\" in models[0].limits (expected one of: rpm, tpm)");
}

static void
user_and_tenant_limits_load(void **state)
{
    (void)state;
    struct gw_config *cfg =
        load_ok("limits: { user: { rpm: 30 }, tenant: { rpm: 300, tpm: 90000 } }\n" MINIMAL);

    assert_int_equal(cfg->user_limits.rpm, 30);
    assert_int_equal(cfg->user_limits.tpm, 0);
    assert_int_equal(cfg->tenant_limits.rpm, 300);
    assert_int_equal(cfg->tenant_limits.tpm, 90000);
    assert_int_equal(cfg->key_limits.rpm, 0);
    gw_config_free(cfg);
}

static void
quota_webhook_loads_and_is_checked(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("quotas: { webhook: \"https://hooks.example.com/aigw/\", "
                                    "webhook_timeout: 2s }\n" MINIMAL);

    assert_string_equal(cfg->quota_webhook, "https://hooks.example.com/aigw");
    assert_int_equal(cfg->quota_webhook_timeout_ms, 2000);
    gw_config_free(cfg);
    cfg = load_ok(MINIMAL);
    assert_null(cfg->quota_webhook);
    assert_int_equal(cfg->quota_webhook_timeout_ms, 5000);
    gw_config_free(cfg);
    expect_error("quotas: { webhook_timeout: 2h }\n" MINIMAL, 1, 28,
                 "\"quotas.webhook_timeout\" must be between 1ms and 1m (got 2h)");
    expect_error("quotas: { hook: x }\n" MINIMAL, 1, 11,
                 "unknown key \"hook\" in quotas (expected one of: webhook, webhook_timeout)");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(limits_absent_mean_unlimited),
        cmocka_unit_test(top_level_limits_load_and_models_inherit_them),
        cmocka_unit_test(model_limit_of_zero_lifts_the_default),
        cmocka_unit_test(limit_values_are_checked),
        cmocka_unit_test(user_and_tenant_limits_load),
        cmocka_unit_test(quota_webhook_loads_and_is_checked),
    };

    gw_log_init("test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
