/*
 * test_confroute.c - the routing keys of the configuration file
 * (master/confroute.c): a provider's health check and timeouts, a target's
 * weight, price, region and tags, a model's routing and fallbacks; their
 * defaults, and one case per kind of error with the exact
 * "FILE:LINE:COLUMN: message" it must produce.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/config_load.h"

/* Two providers on one line each, then models from line 4. */
#define TWO_PROVIDERS                                                                              \
    "providers:\n"                                                                                 \
    "  - { name: east, type: openai, base_url: \"http://10.0.0.5:8000/v1\",\n"                     \
    "      health: { interval: 5s, timeout: 2s, path: /v1/models },\n"                             \
    "      timeouts: { connect: 1s, idle: 20s } }\n"                                               \
    "  - { name: west, type: openai, base_url: \"http://10.0.0.6:8000/v1\" }\n"

/* One target line whose extra keys start at column 38. */
#define TARGET(extra)                                                                              \
    PROVIDERS "models:\n"                                                                          \
              "  - name: demo\n"                                                                   \
              "    targets:\n"                                                                     \
              "      - { provider: local, model: a, " extra " }\n"

/* A routing mapping on line 7 whose keys start at column 16. */
#define ROUTING(keys)                                                                              \
    PROVIDERS "models:\n"                                                                          \
              "  - name: demo\n"                                                                   \
              "    routing: { " keys " }\n"                                                        \
              "    targets:\n"                                                                     \
              "      - { provider: local, model: a }\n"

/* A fallbacks list on line 7 whose items start at column 17. */
#define FALLBACKS(list)                                                                            \
    PROVIDERS "models:\n"                                                                          \
              "  - name: chat\n"                                                                   \
              "    fallbacks: " list "\n"                                                          \
              "    targets:\n"                                                                     \
              "      - { provider: local, model: a }\n"                                            \
              "  - name: chat-small\n"                                                             \
              "    targets:\n"                                                                     \
              "      - { provider: local, model: b }\n"

static void
routing_example_loads_every_value(void **state)
{
    (void)state;
    struct gw_config *cfg =
        load_ok(TWO_PROVIDERS "models:\n"
                              "  - name: chat\n"
                              "    routing: { strategy: price, retries: 2, deadline: 60s,\n"
                              "               breaker: { failures: 3, cooldown: 10s },\n"
                              "               session_header: X-Conversation }\n"
                              "    fallbacks: [chat-small]\n"
                              "    targets:\n"
                              "      - { provider: east, model: qwen2.5-72b, weight: 3,\n"
                              "          price: { input: 0.4, output: 1.2 }, region: eu-west,\n"
                              "          tags: [gpu, fp8] }\n"
                              "      - { provider: west, model: qwen2.5-72b, weight: 1,\n"
                              "          price: { input: 0.5, output: 1.5 } }\n"
                              "  - name: chat-small\n"
                              "    targets:\n"
                              "      - { provider: west, model: qwen2.5-7b }\n");
    const struct gw_provider *east = &cfg->providers[0], *west = &cfg->providers[1];

    assert_int_equal(east->health_interval_ms, 5000);
    assert_int_equal(east->health_timeout_ms, 2000);
    assert_string_equal(east->health_path, "/v1/models");
    assert_int_equal(east->timeouts.connect_ms, 1000);
    assert_int_equal(east->timeouts.first_byte_ms, 0); /* 0: the model's */
    assert_int_equal(east->timeouts.idle_ms, 20000);
    assert_int_equal(east->timeouts.total_ms, 0);
    assert_int_equal(west->health_interval_ms, 0); /* no active check */
    assert_null(west->health_path);

    const struct gw_model *m = &cfg->models[0];
    assert_int_equal(m->routing.strategy, GW_ROUTE_PRICE);
    assert_int_equal(m->routing.retries, 2);
    assert_int_equal(m->routing.deadline_ms, 60000);
    assert_int_equal(m->routing.breaker_failures, 3);
    assert_int_equal(m->routing.breaker_cooldown_ms, 10000);
    assert_string_equal(m->routing.session_header, "x-conversation");
    assert_int_equal(m->nfallbacks, 1);
    assert_string_equal(m->fallbacks[0], "chat-small");
    assert_int_equal(m->ntargets, 2);
    assert_int_equal(m->targets[0].weight, 3);
    assert_true(m->targets[0].price_input == 0.4);
    assert_true(m->targets[0].price_output == 1.2);
    assert_string_equal(m->targets[0].region, "eu-west");
    assert_int_equal(m->targets[0].ntags, 2);
    assert_string_equal(m->targets[0].tags[0], "gpu");
    assert_string_equal(m->targets[0].tags[1], "fp8");
    assert_int_equal(m->targets[1].provider, 1);
    assert_int_equal(m->targets[1].weight, 1);
    assert_true(m->targets[1].price_input == 0.5);
    assert_true(m->targets[1].price_output == 1.5);
    assert_null(m->targets[1].region);
    assert_int_equal(m->targets[1].ntags, 0);
    gw_config_free(cfg);
}

static void
routing_defaults_when_absent(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MINIMAL);
    const struct gw_provider *p = &cfg->providers[0];
    const struct gw_model *m = &cfg->models[0];

    assert_int_equal(p->health_interval_ms, 0);
    assert_int_equal(p->health_timeout_ms, 0);
    assert_null(p->health_path);
    assert_int_equal(p->timeouts.connect_ms, 0);
    assert_int_equal(p->timeouts.first_byte_ms, 0);
    assert_int_equal(p->timeouts.idle_ms, 0);
    assert_int_equal(p->timeouts.total_ms, 0);
    assert_int_equal(m->targets[0].weight, 1);
    assert_true(m->targets[0].price_input == 0 && m->targets[0].price_output == 0);
    assert_null(m->targets[0].region);
    assert_null(m->targets[0].tags);
    assert_int_equal(m->targets[0].ntags, 0);
    assert_int_equal(m->routing.strategy, GW_ROUTE_WEIGHTED);
    assert_int_equal(m->routing.retries, 0); /* one target: nothing to retry on */
    assert_int_equal(m->routing.deadline_ms, 0);
    assert_int_equal(m->routing.breaker_failures, 5);
    assert_int_equal(m->routing.breaker_cooldown_ms, 30000);
    assert_true(m->routing.breaker_error_rate == 0); /* failures in a row only */
    assert_int_equal(m->routing.breaker_window_ms, 30000);
    assert_int_equal(m->routing.breaker_min_requests, 20);
    assert_string_equal(m->routing.session_header, "x-session-id");
    assert_null(m->fallbacks);
    assert_int_equal(m->nfallbacks, 0);
    gw_config_free(cfg);
}

static void
retries_default_to_one_with_another_target(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(PROVIDERS "models:\n"
                                              "  - name: demo\n"
                                              "    targets:\n"
                                              "      - { provider: local, model: a }\n"
                                              "      - { provider: local, model: b }\n");

    assert_int_equal(cfg->models[0].routing.retries, 1);
    gw_config_free(cfg);

    cfg = load_ok(PROVIDERS "models:\n"
                            "  - name: demo\n"
                            "    routing: { strategy: sticky, breaker: { failures: 0 } }\n"
                            "    targets:\n"
                            "      - { provider: local, model: a }\n"
                            "      - { provider: local, model: b }\n");
    assert_int_equal(cfg->models[0].routing.strategy, GW_ROUTE_STICKY);
    assert_int_equal(cfg->models[0].routing.retries, 1);
    assert_int_equal(cfg->models[0].routing.breaker_failures, 0); /* no breaker */
    assert_int_equal(cfg->models[0].routing.breaker_cooldown_ms, 30000);
    gw_config_free(cfg);

    cfg = load_ok(PROVIDERS "models:\n"
                            "  - name: demo\n"
                            "    targets:\n"
                            "      - { provider: local, model: a }\n"
                            "      - { provider: local, model: b }\n"
                            "    routing: { retries: 0 }\n");
    assert_int_equal(cfg->models[0].routing.retries, 0);
    gw_config_free(cfg);
}

static void
every_strategy_name_is_accepted(void **state)
{
    (void)state;
    char text[1024];

    for (int i = 0; i < GW_ROUTE_NSTRATEGIES; i++) {
        snprintf(text, sizeof(text),
                 PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    routing: { strategy: %s }\n"
                           "    targets:\n"
                           "      - provider: local\n"
                           "        model: a\n"
                           "        price: { input: 1, output: 2 }\n",
                 gw_route_strategy_names[i]);
        struct gw_config *cfg = load_ok(text);
        assert_int_equal(cfg->models[0].routing.strategy, i);
        gw_config_free(cfg);
    }
}

static void
health_mapping_fills_its_defaults(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(PROVIDERS "    health: {}\n" MODELS);

    assert_int_equal(cfg->providers[0].health_interval_ms, 10000);
    assert_int_equal(cfg->providers[0].health_timeout_ms, 2000);
    assert_string_equal(cfg->providers[0].health_path, "/models");
    gw_config_free(cfg);

    cfg = load_ok(PROVIDERS "    health: { interval: 1s, timeout: 300ms }\n" MODELS);
    assert_int_equal(cfg->providers[0].health_interval_ms, 1000);
    assert_int_equal(cfg->providers[0].health_timeout_ms, 300);
    assert_string_equal(cfg->providers[0].health_path, "/models");
    gw_config_free(cfg);
}

static void
price_accepts_decimal_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double value;
    } cases[] = {{"15", 15}, {"0", 0}, {"2.5e-1", 0.25}, {"\"0.4\"", 0.4}, {"1000000", 1e6}};
    char text[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), TARGET("price: { input: %s, output: 1 }"), cases[i].text);
        struct gw_config *cfg = load_ok(text);
        assert_true(cfg->models[0].targets[0].price_input == cases[i].value);
        gw_config_free(cfg);
    }
}

static void
fallback_cycle_is_allowed(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(PROVIDERS "models:\n"
                                              "  - name: a\n"
                                              "    fallbacks: [b]\n"
                                              "    targets: [{ provider: local, model: x }]\n"
                                              "  - name: b\n"
                                              "    fallbacks: [a]\n"
                                              "    targets: [{ provider: local, model: y }]\n");

    assert_string_equal(cfg->models[0].fallbacks[0], "b");
    assert_string_equal(cfg->models[1].fallbacks[0], "a");
    gw_config_free(cfg);
}

static void
health_timeout_must_be_shorter_than_interval(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    health: { interval: 2s, timeout: 2s }\n" MODELS, 5, 38,
                 "\"providers[0].health.timeout\" must be shorter than "
                 "providers[0].health.interval (2s)");
    /* Only the interval given: the default timeout is what it clashes with. */
    expect_error(PROVIDERS "    health: { interval: 1s }\n" MODELS, 5, 25,
                 "\"providers[0].health.interval\" must be longer than "
                 "providers[0].health.timeout (2s by default)");
}

static void
health_values_are_checked(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    health: { interval: 50ms }\n" MODELS, 5, 25,
                 "\"providers[0].health.interval\" must be between 100ms and 1h (got 50ms)");
    expect_error(PROVIDERS "    health: { path: models }\n" MODELS, 5, 21,
                 "\"providers[0].health.path\" must be a path starting with '/', without "
                 "spaces (got \"models\")");
    expect_error(PROVIDERS "    health: { intervall: 5s }\n" MODELS, 5, 15,
                 "unknown key \"intervall\" in providers[0].health (expected one of: interval, "
                 "timeout, path)");
    expect_error(PROVIDERS "    health: yes\n" MODELS, 5, 13,
                 "\"providers[0].health\" must be a mapping of keys (interval, timeout, path)");
}

static void
provider_timeouts_are_checked(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    timeouts: { connect: 0 }\n" MODELS, 5, 26,
                 "\"providers[0].timeouts.connect\" must be longer than zero (got \"0\")");
    expect_error(PROVIDERS "    timeouts: { dial: 1s }\n" MODELS, 5, 17,
                 "unknown key \"dial\" in providers[0].timeouts (expected one of: connect, "
                 "first_byte, idle, total)");
}

static void
target_weight_is_from_1_to_1000(void **state)
{
    (void)state;
    expect_error(TARGET("weight: 0"), 8, 46,
                 "\"models[0].targets[0].weight\" must be between 1 and 1000 (got 0)");
    expect_error(TARGET("weight: 1001"), 8, 46,
                 "\"models[0].targets[0].weight\" must be between 1 and 1000 (got 1001)");
    expect_error(TARGET("weight: -1"), 8, 46,
                 "\"models[0].targets[0].weight\" must be a whole number (got \"-1\")");
    expect_error(TARGET("weight: heavy"), 8, 46,
                 "\"models[0].targets[0].weight\" must be a whole number (got \"heavy\")");
}

static void
target_price_is_checked(void **state)
{
    (void)state;
    static const char *const not_numbers[] = {"cheap", "inf", "nan", "0x10", "1e999", ".", "1e"};
    char text[512], msg[256];

    expect_error(TARGET("price: { input: -1, output: 1 }"), 8, 54,
                 "\"models[0].targets[0].price.input\" must be between 0 and 1000000 (got -1)");
    expect_error(TARGET("price: { input: 1, output: 2000000 }"), 8, 65,
                 "\"models[0].targets[0].price.output\" must be between 0 and 1000000 "
                 "(got 2000000)");
    for (size_t i = 0; i < sizeof(not_numbers) / sizeof(not_numbers[0]); i++) {
        snprintf(text, sizeof(text), TARGET("price: { input: \"%s\", output: 1 }"), not_numbers[i]);
        snprintf(msg, sizeof(msg),
                 "\"models[0].targets[0].price.input\" must be a number such as 0.4 "
                 "(got \"%s\")",
                 not_numbers[i]);
        expect_error(text, 8, 54, msg);
    }
    expect_error(TARGET("price: { input: 1 }"), 8, 45,
                 "missing required key \"output\" in models[0].targets[0].price");
    expect_error(TARGET("price: 3"), 8, 45,
                 "\"models[0].targets[0].price\" must be a mapping of keys (input, output)");
}

static void
target_region_and_tags_are_checked(void **state)
{
    (void)state;
    expect_error(TARGET("region: \"us east\""), 8, 46,
                 "\"models[0].targets[0].region\" must not contain spaces or control characters "
                 "(got \"us east\")");
    expect_error(TARGET("tags: [gpu, gpu]"), 8, 50,
                 "\"models[0].targets[0].tags[1]\": \"gpu\" is listed twice");
    expect_error(TARGET("tags: gpu"), 8, 44,
                 "\"models[0].targets[0].tags\" must be a list of tags");
    expect_error(TARGET("tags: []"), 8, 44,
                 "\"models[0].targets[0].tags\" must list at least one tag");
    expect_error(TARGET("tags: [\"a b\"]"), 8, 45,
                 "\"models[0].targets[0].tags[0]\" must not contain spaces or control characters "
                 "(got \"a b\")");
    expect_error(TARGET("colour: red"), 8, 38,
                 "unknown key \"colour\" in models[0].targets[0] (expected one of: provider, "
                 "model, weight, price, region, tags, deployment, api_version)");
}

static void
routing_strategy_must_be_known(void **state)
{
    (void)state;
    expect_error(ROUTING("strategy: fastest"), 7, 26,
                 "\"models[0].routing.strategy\" must be one of weighted, sticky, least_busy, "
                 "latency, price, throughput (got \"fastest\")");
    expect_error(ROUTING("stratgy: price"), 7, 16,
                 "unknown key \"stratgy\" in models[0].routing (expected one of: strategy, "
                 "retries, deadline, breaker, session_header)");
}

static void
routing_values_are_checked(void **state)
{
    (void)state;
    expect_error(ROUTING("retries: 11"), 7, 25,
                 "\"models[0].routing.retries\" must be between 0 and 10 (got 11)");
    expect_error(ROUTING("deadline: 0"), 7, 26,
                 "\"models[0].routing.deadline\" must be longer than zero (got \"0\")");
    expect_error(ROUTING("breaker: { failures: 1001 }"), 7, 37,
                 "\"models[0].routing.breaker.failures\" must be between 0 and 1000 (got 1001)");
    expect_error(ROUTING("breaker: { cooldown: 2h }"), 7, 37,
                 "\"models[0].routing.breaker.cooldown\" must be between 1ms and 1h (got 2h)");
    expect_error(ROUTING("breaker: { open_after: 3 }"), 7, 27,
                 "unknown key \"open_after\" in models[0].routing.breaker (expected one of: "
                 "failures, cooldown, error_rate, window, min_requests)");
    expect_error(ROUTING("session_header: \"x session\""), 7, 32,
                 "\"models[0].routing.session_header\" must be a header name such as "
                 "x-session-id (got \"x session\")");
    expect_error(ROUTING("session_header: \"x-session:\""), 7, 32,
                 "\"models[0].routing.session_header\" must be a header name such as "
                 "x-session-id (got \"x-session:\")");
    expect_error(ROUTING("session_header: "
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                 7, 32,
                 "\"models[0].routing.session_header\" is 65 bytes long; at most 64 are "
                 "allowed");
}

static void
breaker_error_rate_keys_load(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(ROUTING("breaker: { failures: 5, error_rate: 0.5, window: 10s, "
                                            "min_requests: 10, cooldown: 2s }"));
    const struct gw_routing *r = &cfg->models[0].routing;

    assert_int_equal(r->breaker_failures, 5);
    assert_true(r->breaker_error_rate == 0.5);
    assert_int_equal(r->breaker_window_ms, 10000);
    assert_int_equal(r->breaker_min_requests, 10);
    assert_int_equal(r->breaker_cooldown_ms, 2000);
    gw_config_free(cfg);

    /* error_rate alone: the other two keep their defaults, and failures 0
     * leaves a breaker that opens by rate only. */
    cfg = load_ok(ROUTING("breaker: { failures: 0, error_rate: 0.25 }"));
    r = &cfg->models[0].routing;
    assert_int_equal(r->breaker_failures, 0);
    assert_true(r->breaker_error_rate == 0.25);
    assert_int_equal(r->breaker_window_ms, 30000);
    assert_int_equal(r->breaker_min_requests, 20);
    gw_config_free(cfg);

    /* The bounds themselves; 0 says "off" as the default does. */
    cfg = load_ok(ROUTING("breaker: { error_rate: 1, window: 1s, min_requests: 1 }"));
    r = &cfg->models[0].routing;
    assert_true(r->breaker_error_rate == 1);
    assert_int_equal(r->breaker_window_ms, 1000);
    assert_int_equal(r->breaker_min_requests, 1);
    gw_config_free(cfg);
    cfg = load_ok(ROUTING("breaker: { error_rate: 0, window: 1h, min_requests: 100000 }"));
    r = &cfg->models[0].routing;
    assert_true(r->breaker_error_rate == 0);
    assert_int_equal(r->breaker_window_ms, 3600000);
    assert_int_equal(r->breaker_min_requests, 100000);
    gw_config_free(cfg);
}

static void
breaker_error_rate_values_are_checked(void **state)
{
    (void)state;
    expect_error(ROUTING("breaker: { error_rate: 1.5 }"), 7, 39,
                 "\"models[0].routing.breaker.error_rate\" must be between 0 and 1 (got 1.5)");
    expect_error(ROUTING("breaker: { error_rate: -0.1 }"), 7, 39,
                 "\"models[0].routing.breaker.error_rate\" must be between 0 and 1 (got -0.1)");
    expect_error(ROUTING("breaker: { error_rate: 50% }"), 7, 39,
                 "\"models[0].routing.breaker.error_rate\" must be a number such as 0.4 (got "
                 "\"50%\")");
    expect_error(ROUTING("breaker: { error_rate: [0.5] }"), 7, 39,
                 "\"models[0].routing.breaker.error_rate\" must be a number such as 0.4");
    expect_error(ROUTING("breaker: { window: 500ms }"), 7, 35,
                 "\"models[0].routing.breaker.window\" must be between 1s and 1h (got 500ms)");
    expect_error(ROUTING("breaker: { window: 2h }"), 7, 35,
                 "\"models[0].routing.breaker.window\" must be between 1s and 1h (got 2h)");
    expect_error(ROUTING("breaker: { window: 0 }"), 7, 35,
                 "\"models[0].routing.breaker.window\" must be longer than zero (got \"0\")");
    expect_error(ROUTING("breaker: { window: soon }"), 7, 35,
                 "\"models[0].routing.breaker.window\" must be a duration such as 500ms, 30s, "
                 "5m or 1h (got \"soon\")");
    expect_error(ROUTING("breaker: { min_requests: 0 }"), 7, 41,
                 "\"models[0].routing.breaker.min_requests\" must be between 1 and 100000 (got "
                 "0)");
    expect_error(ROUTING("breaker: { min_requests: 100001 }"), 7, 41,
                 "\"models[0].routing.breaker.min_requests\" must be between 1 and 100000 (got "
                 "100001)");
    expect_error(ROUTING("breaker: { min_requests: 2.5 }"), 7, 41,
                 "\"models[0].routing.breaker.min_requests\" must be a whole number (got "
                 "\"2.5\")");
    /* On a line of its own, the column follows the key. */
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    targets:\n"
                           "      - { provider: local, model: a }\n"
                           "    routing:\n"
                           "      breaker:\n"
                           "        failures: 5\n"
                           "        error_rate: 2\n",
                 12, 21,
                 "\"models[0].routing.breaker.error_rate\" must be between 0 and 1 (got 2)");
}

static void
price_strategy_needs_prices(void **state)
{
    (void)state;
    expect_error(ROUTING("strategy: price"), 7, 26,
                 "\"models[0].routing.strategy\": price routing needs price: on the targets "
                 "(models[0].targets[0] has none)");
    /* One target without a price would look free: refused too. */
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    targets:\n"
                           "      - { provider: local, model: a, price: { input: 1, output: 2 } }\n"
                           "      - { provider: local, model: b }\n"
                           "    routing:\n"
                           "      strategy: price\n",
                 11, 17,
                 "\"models[0].routing.strategy\": price routing needs price: on the targets "
                 "(models[0].targets[1] has none)");
}

static void
fallbacks_must_name_other_models(void **state)
{
    (void)state;
    expect_error(FALLBACKS("[chat-small, chat-tiny]"), 7, 29,
                 "\"models[0].fallbacks[1]\": no model named \"chat-tiny\" (declared: chat, "
                 "chat-small)");
    expect_error(FALLBACKS("[chat]"), 7, 17,
                 "\"models[0].fallbacks[0]\": model \"chat\" cannot be its own fallback");
    expect_error(FALLBACKS("[chat-small, chat-small]"), 7, 29,
                 "\"models[0].fallbacks[1]\": \"chat-small\" is listed twice");
    expect_error(FALLBACKS("chat-small"), 7, 16,
                 "\"models[0].fallbacks\" must be a list of model names");
    expect_error(FALLBACKS("[]"), 7, 16,
                 "\"models[0].fallbacks\" must list at least one model name");
    expect_error(FALLBACKS("[{ name: chat-small }]"), 7, 17,
                 "\"models[0].fallbacks[0]\" must be the name of a model");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routing_example_loads_every_value),
        cmocka_unit_test(routing_defaults_when_absent),
        cmocka_unit_test(retries_default_to_one_with_another_target),
        cmocka_unit_test(every_strategy_name_is_accepted),
        cmocka_unit_test(health_mapping_fills_its_defaults),
        cmocka_unit_test(price_accepts_decimal_numbers),
        cmocka_unit_test(fallback_cycle_is_allowed),
        cmocka_unit_test(health_timeout_must_be_shorter_than_interval),
        cmocka_unit_test(health_values_are_checked),
        cmocka_unit_test(provider_timeouts_are_checked),
        cmocka_unit_test(target_weight_is_from_1_to_1000),
        cmocka_unit_test(target_price_is_checked),
        cmocka_unit_test(target_region_and_tags_are_checked),
        cmocka_unit_test(routing_strategy_must_be_known),
        cmocka_unit_test(routing_values_are_checked),
        cmocka_unit_test(breaker_error_rate_keys_load),
        cmocka_unit_test(breaker_error_rate_values_are_checked),
        cmocka_unit_test(price_strategy_needs_prices),
        cmocka_unit_test(fallbacks_must_name_other_models),
    };

    gw_log_init("test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
