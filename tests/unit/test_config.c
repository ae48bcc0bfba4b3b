/*
 * test_config.c - the YAML configuration loader (master/config.c): every
 * value of a full file, the defaults, the parsers of durations and sizes,
 * secrets, and one case per kind of error with the exact
 * "FILE:LINE:COLUMN: message" it must produce.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "master/master.h"

#include "tests/unit/config_load.h"

/* ---------------------------------------------------------------- values */

static const char full_example[] = "listen: [\"127.0.0.1:8080\", \"[::1]:8081\"]\n"
                                   "state_dir: /tmp/aigw-state\n"
                                   "admin:\n"
                                   "  socket: /tmp/aigw.sock\n"
                                   "  mode: \"0600\"\n"
                                   "workers:\n"
                                   "  start: 4\n"
                                   "  min_spare: 2\n"
                                   "  max_spare: 8\n"
                                   "  max: 64\n"
                                   "  max_requests: 10000\n"
                                   "shutdown_timeout: 45s\n"
                                   "log:\n"
                                   "  level: debug\n"
                                   "  access: off\n"
                                   "  file: /tmp/aigw-error.log\n"
                                   "  access_file: /tmp/aigw-access.log\n"
                                   "metrics: { listen: \"127.0.0.1:9100\" }\n"
                                   "http:\n"
                                   "  max_header_size: 32k\n"
                                   "  max_body_size: 2m\n"
                                   "  keepalive_timeout: 10s\n"
                                   "  read_timeout: 1500ms\n"
                                   "  write_timeout: 2m\n"
                                   "upstream:\n"
                                   "  max_response_size: 1g\n"
                                   "timeouts:\n"
                                   "  connect: 3s\n"
                                   "  first_byte: 90\n"
                                   "  idle: 45s\n"
                                   "  total: 1h\n"
                                   "providers:\n"
                                   "  - name: local\n"
                                   "    type: openai\n"
                                   "    base_url: \"http://127.0.0.1:9090/v1/\"\n"
                                   "  - name: cloud\n"
                                   "    type: openai\n"
                                   "    base_url: https://api.example.com/v1\n"
                                   "models:\n"
                                   "  - name: demo\n"
                                   "    timeouts: { connect: 2s }\n"
                                   "    targets:\n"
                                   "      - { provider: local, model: mock-small }\n"
                                   "      - { provider: cloud, model: big-model }\n"
                                   "  - name: demo-embed\n"
                                   "    targets:\n"
                                   "      - provider: cloud\n"
                                   "        model: embed-1\n";

static void
full_example_loads_every_value(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(full_example);

    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(cfg->listen[1], "[::1]:8081");
    assert_string_equal(cfg->state_dir, "/tmp/aigw-state");
    assert_string_equal(cfg->admin_socket, "/tmp/aigw.sock");
    assert_int_equal(cfg->admin_mode, 0600);
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->workers_min_spare, 2);
    assert_int_equal(cfg->workers_max_spare, 8);
    assert_int_equal(cfg->workers_max, 64);
    assert_int_equal(cfg->max_requests, 10000);
    assert_int_equal(cfg->shutdown_timeout_ms, 45000);
    assert_int_equal(cfg->log_level, GW_LOG_DEBUG);
    assert_false(cfg->access_log);
    assert_string_equal(cfg->log_file, "/tmp/aigw-error.log");
    assert_string_equal(cfg->access_file, "/tmp/aigw-access.log");
    assert_false(cfg->access_journal);
    assert_string_equal(cfg->metrics_listen, "127.0.0.1:9100");
    assert_null(cfg->user);
    assert_null(cfg->group);
    assert_int_equal(cfg->http.max_header_size, 32 * 1024);
    assert_int_equal(cfg->http.max_body_size, 2 * 1024 * 1024);
    assert_int_equal(cfg->http.keepalive_timeout_ms, 10000);
    assert_int_equal(cfg->http.read_timeout_ms, 1500);
    assert_int_equal(cfg->http.write_timeout_ms, 120000);
    assert_int_equal(cfg->max_response_size, 1024 * 1024 * 1024);
    assert_int_equal(cfg->timeouts.connect_ms, 3000);
    assert_int_equal(cfg->timeouts.first_byte_ms, 90000);
    assert_int_equal(cfg->timeouts.idle_ms, 45000);
    assert_int_equal(cfg->timeouts.total_ms, 3600000);

    assert_int_equal(cfg->nproviders, 2);
    assert_string_equal(cfg->providers[0].name, "local");
    assert_int_equal(cfg->providers[0].type, GW_PROVIDER_OPENAI);
    assert_string_equal(cfg->providers[0].base_url, "http://127.0.0.1:9090/v1");
    assert_null(cfg->providers[0].api_key_env);
    assert_null(cfg->providers[0].api_key_file);
    assert_null(cfg->providers[0].api_key);
    assert_string_equal(cfg->providers[1].name, "cloud");
    assert_string_equal(cfg->providers[1].base_url, "https://api.example.com/v1");

    assert_int_equal(cfg->nmodels, 2);
    const struct gw_model *m = gw_config_model_find(cfg, "demo");
    assert_ptr_equal(m, &cfg->models[0]);
    assert_int_equal(m->ntargets, 2);
    assert_int_equal(m->targets[0].provider, 0);
    assert_string_equal(m->targets[0].model, "mock-small");
    assert_int_equal(m->targets[1].provider, 1);
    assert_string_equal(m->targets[1].model, "big-model");
    /* Overridden connect, the rest from the top level. */
    assert_int_equal(m->timeouts.connect_ms, 2000);
    assert_int_equal(m->timeouts.first_byte_ms, 90000);
    assert_int_equal(m->timeouts.idle_ms, 45000);
    assert_int_equal(m->timeouts.total_ms, 3600000);

    m = gw_config_model_find(cfg, "demo-embed");
    assert_non_null(m);
    assert_int_equal(m->ntargets, 1);
    assert_int_equal(m->targets[0].provider, 1);
    assert_string_equal(m->targets[0].model, "embed-1");
    assert_int_equal(m->timeouts.connect_ms, 3000);
    gw_config_free(cfg);
}

static void
defaults_fill_unset_keys(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MINIMAL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(cfg->state_dir, "/var/lib/aigw");
    assert_string_equal(cfg->admin_socket, GW_DEFAULT_SOCKET);
    assert_int_equal(cfg->admin_mode, 0660);
    assert_int_equal(cfg->workers, cpus < 2 ? 2 : cpus > 1024 ? 1024 : cpus);
    assert_int_equal(cfg->workers_min_spare, 0);
    assert_int_equal(cfg->workers_max_spare, 0);
    assert_int_equal(cfg->workers_max, cfg->workers);
    assert_int_equal(cfg->max_requests, 0);
    assert_int_equal(cfg->shutdown_timeout_ms, 30000);
    assert_null(cfg->user);
    assert_null(cfg->group);
    assert_int_equal(cfg->log_level, GW_LOG_INFO);
    assert_true(cfg->access_log);
    assert_null(cfg->log_file);
    assert_null(cfg->access_file);
    assert_false(cfg->access_journal);
    assert_null(cfg->metrics_listen);
    assert_int_equal(cfg->http.max_header_size, 16 * 1024);
    assert_int_equal(cfg->http.max_body_size, 8 * 1024 * 1024);
    assert_int_equal(cfg->http.keepalive_timeout_ms, 75000);
    assert_int_equal(cfg->http.read_timeout_ms, 30000);
    assert_int_equal(cfg->http.write_timeout_ms, 30000);
    assert_int_equal(cfg->max_response_size, 64 * 1024 * 1024);
    assert_int_equal(cfg->timeouts.connect_ms, 5000);
    assert_int_equal(cfg->timeouts.first_byte_ms, 120000);
    assert_int_equal(cfg->timeouts.idle_ms, 60000);
    assert_int_equal(cfg->timeouts.total_ms, 600000);
    assert_int_equal(cfg->models[0].timeouts.connect_ms, 5000);
    assert_int_equal(cfg->models[0].timeouts.total_ms, 600000);
    assert_string_equal(cfg->path, yaml_path);
    gw_config_free(cfg);
}

static void
listen_accepts_a_single_string(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("listen: \"*:9000\"\n" MINIMAL);

    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0], "*:9000");
    gw_config_free(cfg);
}

static void
listen_accepts_every_host_form(void **state)
{
    (void)state;
    struct gw_config *cfg =
        load_ok("listen: [\"0.0.0.0:80\", \"[::]:81\", \":82\", \"localhost:83\"]\n" MINIMAL);

    assert_int_equal(cfg->nlisten, 4);
    assert_string_equal(cfg->listen[2], ":82");
    gw_config_free(cfg);
}

static void
admin_mode_is_octal_quoted_or_not(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("admin: { mode: 0600 }\n" MINIMAL);

    assert_int_equal(cfg->admin_mode, 0600);
    gw_config_free(cfg);
    cfg = load_ok("admin: { mode: \"0640\" }\n" MINIMAL);
    assert_int_equal(cfg->admin_mode, 0640);
    gw_config_free(cfg);
}

static void
bool_accepts_yes_no_on_off(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool value;
    } cases[] = {{"true", true},   {"yes", true}, {"on", true},   {"True", true},
                 {"false", false}, {"no", false}, {"off", false}, {"FALSE", false}};
    char text[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "log: { access: %s }\n" MINIMAL, cases[i].text);
        struct gw_config *cfg = load_ok(text);
        assert_int_equal(cfg->access_log, cases[i].value);
        gw_config_free(cfg);
    }
}

static void
base_url_loses_trailing_slashes(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("providers:\n"
                                    "  - name: local\n"
                                    "    type: openai\n"
                                    "    base_url: https://example.com//\n" MODELS);

    assert_string_equal(cfg->providers[0].base_url, "https://example.com");
    gw_config_free(cfg);
}

static void
providers_may_follow_models(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MODELS PROVIDERS);

    assert_int_equal(cfg->models[0].targets[0].provider, 0);
    gw_config_free(cfg);
}

/* --------------------------------------------------------------- parsers */

static void
parse_duration_reads_every_unit(void **state)
{
    (void)state;
    long ms = 0;

    assert_int_equal(gw_master_config_parse_duration("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(gw_master_config_parse_duration("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(gw_master_config_parse_duration("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(gw_master_config_parse_duration("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(gw_master_config_parse_duration("75", &ms), 0);
    assert_int_equal(ms, 75000);
}

static void
parse_duration_rejects_bad_text(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "0", "0s", "s", "-1s", "1.5s", "10 s", "1d", "5sec", "1ms2", "99999999999999999999h"};
    long ms = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(gw_master_config_parse_duration(bad[i], &ms), GW_EINVAL);
        assert_int_equal(ms, 42);
    }
}

static void
parse_size_reads_every_multiple(void **state)
{
    (void)state;
    size_t n = 0;

    assert_int_equal(gw_master_config_parse_size("512", &n), 0);
    assert_int_equal(n, 512);
    assert_int_equal(gw_master_config_parse_size("16k", &n), 0);
    assert_int_equal(n, 16384);
    assert_int_equal(gw_master_config_parse_size("8M", &n), 0);
    assert_int_equal(n, 8 * 1024 * 1024);
    assert_int_equal(gw_master_config_parse_size("1g", &n), 0);
    assert_int_equal(n, 1024 * 1024 * 1024);
    assert_int_equal(gw_master_config_parse_size("4KB", &n), 0);
    assert_int_equal(n, 4096);
    assert_int_equal(gw_master_config_parse_size("100b", &n), 0);
    assert_int_equal(n, 100);
}

static void
parse_size_rejects_bad_text(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "k", "-1k", "1.5m", "16 k", "16kk", "16t", "16kib", "99999999999999999999g"};
    size_t n = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(gw_master_config_parse_size(bad[i], &n), GW_EINVAL);
        assert_int_equal(n, 42);
    }
}

/* ---------------------------------------------------------------- errors */

static void
missing_file_is_an_io_error(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;
    char err[256];

    assert_int_equal(gw_master_config_load("/nonexistent/aigw.yaml", &cfg, err, sizeof(err)),
                     GW_EIO);
    assert_null(cfg);
    assert_string_equal(err, "/nonexistent/aigw.yaml: No such file or directory");
}

static void
empty_file_is_an_error(void **state)
{
    (void)state;
    expect_error("", 1, 1, "the file is empty; it must declare providers and models");
}

static void
comment_only_file_is_empty(void **state)
{
    (void)state;
    expect_error("# nothing yet\n\n", 1, 1,
                 "the file is empty; it must declare providers and models");
}

static void
top_level_must_be_a_mapping(void **state)
{
    (void)state;
    expect_error("- a\n- b\n", 1, 1,
                 "the file must be a mapping of keys such as \"providers:\" and \"models:\"");
}

static void
yaml_syntax_error_at_problem_mark(void **state)
{
    (void)state;
    expect_error("workers: 4\n  state_dir: /x\n", 2, 12,
                 "YAML syntax error: mapping values are not allowed in this context");
}

static void
yaml_unclosed_flow_sequence(void **state)
{
    (void)state;
    expect_error("listen: [\"a:1\"\nworkers: 2\n", 2, 1,
                 "YAML syntax error: did not find expected ',' or ']' "
                 "(while parsing a flow sequence at line 1, column 9)");
}

static void
unquoted_star_address_gets_a_hint(void **state)
{
    (void)state;
    expect_error("listen: *:8080\n" MINIMAL, 1, 9,
                 "YAML syntax error: did not find expected alphabetic or numeric character "
                 "after '*'; quote a value that starts with '*', such as \"*:8080\"");
}

static void
invalid_utf8_is_located(void **state)
{
    (void)state;
    expect_error("workers: 2\nstate_dir: /\xff\n", 2, 13,
                 "invalid leading UTF-8 octet (the file must be UTF-8 text)");
}

static void
two_documents_are_refused(void **state)
{
    (void)state;
    expect_error(MINIMAL "---\nworkers: 2\n", 10, 1,
                 "a second YAML document: the file must hold exactly one");
}

static void
alias_is_refused(void **state)
{
    (void)state;
    expect_error("state_dir: &dir /x\n"
                 "admin: { socket: *dir }\n" MINIMAL,
                 2, 18, "YAML aliases (*dir) are not supported; write the value out");
}

/* models: type and context_length, and secrets: provider_key_file. */
static void
model_type_context_and_secrets(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(PROVIDERS "secrets: { provider_key_file: /etc/aigw/p.key }\n"
                                              "models:\n"
                                              "  - name: demo\n"
                                              "    targets: [{ provider: local, model: m }]\n"
                                              "  - name: vec\n"
                                              "    type: embeddings\n"
                                              "    context_length: 8192\n"
                                              "    targets: [{ provider: local, model: e }]\n");
    assert_int_equal(cfg->models[0].type, GW_MODEL_CHAT);
    assert_int_equal(cfg->models[0].context_length, 0);
    assert_int_equal(cfg->models[1].type, GW_MODEL_EMBEDDINGS);
    assert_int_equal(cfg->models[1].context_length, 8192);
    assert_string_equal(cfg->provider_key_file, "/etc/aigw/p.key");
    gw_config_free(cfg);
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    type: chatbot\n"
                           "    targets: [{ provider: local, model: m }]\n",
                 7, 11,
                 "\"models[0].type\": unknown model type \"chatbot\" (chat, completions, "
                 "embeddings, images, audio, moderations, responses, video)");
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    context_length: 0\n"
                           "    targets: [{ provider: local, model: m }]\n",
                 7, 21, "\"models[0].context_length\" must be between 1 and 1000000000 (got 0)");
}

static void
unknown_top_level_key(void **state)
{
    (void)state;
    expect_error(
        MINIMAL "listn: 127.0.0.1:8080\n", 10, 1,
        "unknown key \"listn\" (expected one of: listen, state_dir, admin, user, group, "
        "workers, shutdown_timeout, log, metrics, http, upstream, timeouts, providers, "
        "models, limits, quotas, mcp, agents, sandboxes, usage, safety, secrets, cache, capture)");
}

/* ------------------------------------------------------- usage retention */

static void
usage_retention_defaults(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL);

    (void)state;
    assert_int_equal(cfg->usage_detail_days, 30);
    assert_int_equal(cfg->usage_aggregate_days, 730);
    gw_config_free(cfg);
}

static void
usage_retention_values(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL "usage: { detail_days: 7, aggregate_days: 0 }\n");

    (void)state;
    assert_int_equal(cfg->usage_detail_days, 7);
    assert_int_equal(cfg->usage_aggregate_days, 0);
    gw_config_free(cfg);
    cfg = load_ok(MINIMAL "usage:\n  detail_days: 1\n  aggregate_days: 1\n");
    assert_int_equal(cfg->usage_detail_days, 1);
    assert_int_equal(cfg->usage_aggregate_days, 1);
    gw_config_free(cfg);
}

static void
usage_detail_forever_keeps_default_aggregates_forever(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL "usage: { detail_days: 0 }\n");

    (void)state;
    assert_int_equal(cfg->usage_detail_days, 0);
    assert_int_equal(cfg->usage_aggregate_days, 0);
    gw_config_free(cfg);
}

static void
usage_retention_errors(void **state)
{
    (void)state;
    expect_error(MINIMAL "usage: { detail_days: -1 }\n", 10, 23,
                 "\"usage.detail_days\" must be a whole number (got \"-1\")");
    expect_error(MINIMAL "usage: { detail_days: 36501 }\n", 10, 23,
                 "\"usage.detail_days\" must be between 0 and 36500 (got 36501)");
    expect_error(MINIMAL "usage: { detail_days: 7, aggregate_days: 3 }\n", 10, 42,
                 "\"usage.aggregate_days\" (3) must be 0 (forever) or at least "
                 "\"usage.detail_days\" (7)");
    expect_error(MINIMAL "usage:\n  aggregate_days: 10\n", 11, 19,
                 "\"usage.aggregate_days\" (10) must be 0 (forever) or at least "
                 "\"usage.detail_days\" (30)");
    expect_error(MINIMAL "usage: { detail_days: 0, aggregate_days: 5 }\n", 10, 42,
                 "\"usage.aggregate_days\" (5) must be 0 (forever) or at least "
                 "\"usage.detail_days\" (0, forever)");
    expect_error(MINIMAL "usage: { keep: 3 }\n", 10, 10,
                 "unknown key \"keep\" in usage (expected one of: detail_days, aggregate_days)");
    expect_error(MINIMAL "usage: 30\n", 10, 8,
                 "\"usage\" must be a mapping of keys (detail_days, aggregate_days)");
}

static void
unknown_key_in_provider(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    colour: red\n" MODELS, 5, 5,
                 "unknown key \"colour\" in providers[0] (expected one of: name, type, "
                 "base_url, preset, stream_usage, api_version, region, max_tokens, "
                 "api_key_env, api_key_file, health, timeouts)");
}

static void
unknown_key_in_model_timeouts(void **state)
{
    (void)state;
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    timeouts: { conect: 2s }\n"
                           "    targets: [{ provider: local, model: m }]\n",
                 7, 17,
                 "unknown key \"conect\" in models[0].timeouts (expected one of: connect, "
                 "first_byte, idle, total)");
}

static void
workers_must_be_an_integer(void **state)
{
    (void)state;
    expect_error("workers: many\n" MINIMAL, 1, 10, "\"workers\" must be an integer");
}

static void
workers_out_of_range(void **state)
{
    (void)state;
    expect_error("workers: 2000\n" MINIMAL, 1, 10,
                 "\"workers\" must be between 1 and 1024 (got 2000)");
}

static void
section_must_be_a_mapping(void **state)
{
    (void)state;
    expect_error("http: 8m\n" MINIMAL, 1, 7,
                 "\"http\" must be a mapping of keys (max_header_size, max_body_size, "
                 "max_upload_size, keepalive_timeout, read_timeout, write_timeout)");
}

static void
string_must_not_be_a_list(void **state)
{
    (void)state;
    expect_error("state_dir: [a, b]\n" MINIMAL, 1, 12, "\"state_dir\" must be a string");
}

static void
duplicate_key_points_at_the_second(void **state)
{
    (void)state;
    expect_error("workers: 4\n"
                 "log: { level: info }\n"
                 "workers: 8\n" MINIMAL,
                 3, 1, "duplicate key \"workers\" (first at line 1)");
}

static void
duplicate_key_in_nested_mapping(void **state)
{
    (void)state;
    expect_error("http:\n"
                 "  read_timeout: 1s\n"
                 "  read_timeout: 2s\n" MINIMAL,
                 3, 3, "duplicate key \"read_timeout\" in http (first at line 2)");
}

static void
duplicate_provider_name(void **state)
{
    (void)state;
    expect_error(PROVIDERS "  - name: local\n"
                           "    type: openai\n"
                           "    base_url: http://127.0.0.1:9091/v1\n" MODELS,
                 5, 11, "duplicate provider name \"local\" (first at line 2)");
}

static void
duplicate_model_name(void **state)
{
    (void)state;
    expect_error(MINIMAL "  - name: demo\n"
                         "    targets: [{ provider: local, model: other }]\n",
                 10, 11, "duplicate model name \"demo\" (first at line 6)");
}

static void
dangling_provider_reference(void **state)
{
    (void)state;
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    targets:\n"
                           "      - provider: local\n"
                           "        model: a\n"
                           "      - provider: loacl\n"
                           "        model: b\n",
                 10, 19, "no provider named \"loacl\" (declared: local)");
}

static void
missing_required_key_points_at_the_mapping(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: local\n"
                 "    base_url: http://127.0.0.1:9090/v1\n" MODELS,
                 2, 5, "missing required key \"type\" in providers[0]");
}

static void
missing_required_key_in_flow_mapping(void **state)
{
    (void)state;
    expect_error(PROVIDERS "models:\n"
                           "  - name: demo\n"
                           "    targets: [{ provider: local }]\n",
                 7, 15, "missing required key \"model\" in models[0].targets[0]");
}

static void
missing_providers_at_top(void **state)
{
    (void)state;
    expect_error("workers: 2\n" MODELS, 1, 1, "missing required key \"providers\"");
}

static void
empty_model_list(void **state)
{
    (void)state;
    expect_error(PROVIDERS "models: []\n", 5, 9, "\"models\" must list at least one model");
}

static void
unsupported_provider_type(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: local\n"
                 "    type: cohere\n"
                 "    base_url: http://127.0.0.1:9090/v1\n" MODELS,
                 3, 11,
                 "provider type \"cohere\" is not supported (supported: openai, azure, "
                 "anthropic, gemini, bedrock)");
}

static void
bad_provider_name(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: \"my provider\"\n"
                 "    type: openai\n"
                 "    base_url: http://127.0.0.1:9090/v1\n" MODELS,
                 2, 11,
                 "\"providers[0].name\" may hold only letters, digits, '.', '_' and '-' "
                 "(got \"my provider\")");
}

static void
base_url_needs_a_scheme(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: local\n"
                 "    type: openai\n"
                 "    base_url: 127.0.0.1:9090/v1\n" MODELS,
                 4, 15,
                 "\"providers[0].base_url\" must start with http:// or https:// "
                 "(got \"127.0.0.1:9090/v1\")");
}

static void
base_url_needs_a_host(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: local\n"
                 "    type: openai\n"
                 "    base_url: https:///v1\n" MODELS,
                 4, 15, "\"providers[0].base_url\" has no host (got \"https:///v1\")");
}

static void
base_url_must_not_hold_credentials(void **state)
{
    (void)state;
    expect_error("providers:\n"
                 "  - name: local\n"
                 "    type: openai\n"
                 "    base_url: https://user:hunter2@example.com/v1\n" MODELS,
                 4, 15,
                 "\"providers[0].base_url\" must not hold credentials; name them with "
                 "api_key_env or api_key_file");
}

static void
bad_duration(void **state)
{
    (void)state;
    expect_error("timeouts:\n"
                 "  connect: 5 seconds\n" MINIMAL,
                 2, 12,
                 "\"timeouts.connect\" must be a duration such as 500ms, 30s, 5m or 1h "
                 "(got \"5 seconds\")");
}

static void
zero_duration(void **state)
{
    (void)state;
    expect_error("http: { read_timeout: 0ms }\n" MINIMAL, 1, 23,
                 "\"http.read_timeout\" must be longer than zero (got \"0ms\")");
}

static void
duration_over_a_day(void **state)
{
    (void)state;
    expect_error("timeouts: { total: 48h }\n" MINIMAL, 1, 20,
                 "\"timeouts.total\" must be between 1ms and 24h (got 48h)");
}

static void
bad_size(void **state)
{
    (void)state;
    expect_error("http:\n"
                 "  max_body_size: 8 MB\n" MINIMAL,
                 2, 18,
                 "\"http.max_body_size\" must be a size such as 512, 16k, 8m or 1g "
                 "(got \"8 MB\")");
}

static void
size_out_of_range(void **state)
{
    (void)state;
    expect_error("http:\n"
                 "  max_header_size: 2m\n" MINIMAL,
                 2, 20, "\"http.max_header_size\" must be between 1k and 1m (got 2m)");
}

static void
bad_port(void **state)
{
    (void)state;
    expect_error("listen:\n"
                 "  - 127.0.0.1:8080\n"
                 "  - 127.0.0.1:70000\n" MINIMAL,
                 3, 5, "\"listen[1]\": port must be a number from 1 to 65535 (got \"70000\")");
}

static void
port_zero_is_refused(void **state)
{
    (void)state;
    expect_error("listen: \"127.0.0.1:0\"\n" MINIMAL, 1, 9,
                 "\"listen\": port must be a number from 1 to 65535 (got \"0\")");
}

static void
listen_needs_host_and_port(void **state)
{
    (void)state;
    expect_error("listen: [\"8080\"]\n" MINIMAL, 1, 10,
                 "\"listen[0]\" must be host:port, such as 127.0.0.1:8080 (got \"8080\")");
}

static void
ipv6_listen_needs_brackets(void **state)
{
    (void)state;
    expect_error("listen: [\"::1:8080\"]\n" MINIMAL, 1, 10,
                 "\"listen[0]\": an IPv6 address must be in brackets, as in [::1]:8080");
}

static void
bad_ipv4_listen_address(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.256:8080\"]\n" MINIMAL, 1, 10,
                 "\"listen[0]\": bad host in \"127.0.0.256:8080\"");
}

static void
duplicate_listen_address(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n" MINIMAL, 1, 28,
                 "\"listen[1]\": \"127.0.0.1:8080\" is listed twice");
}

static void
admin_mode_refuses_world_bits(void **state)
{
    (void)state;
    expect_error("admin:\n"
                 "  mode: \"0666\"\n" MINIMAL,
                 2, 9,
                 "\"admin.mode\" 0666 lets every local user reach the admin socket; use 0600 "
                 "or 0660");
}

static void
admin_mode_must_be_octal(void **state)
{
    (void)state;
    expect_error("admin: { mode: rw-rw---- }\n" MINIMAL, 1, 16,
                 "\"admin.mode\" must be octal permission bits such as 0600 or 0660");
}

static void
log_level_must_be_known(void **state)
{
    (void)state;
    expect_error("log: { level: verbose }\n" MINIMAL, 1, 15,
                 "\"log.level\" must be one of error, warn, info, debug (got \"verbose\")");
}

static void
long_admin_socket_path(void **state)
{
    (void)state;
    char text[1024], path[121];

    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    snprintf(text, sizeof(text), "admin: { socket: %s }\n" MINIMAL, path);
    expect_error(text, 1, 18,
                 "\"admin.socket\" is 120 bytes long; a Unix socket path holds at most 107");
}

/* --------------------------------------------------------------- secrets */

static void
api_key_env_is_resolved(void **state)
{
    (void)state;
    setenv("AIGW_TEST_KEY", "sk-test-from-env", 1);
    struct gw_config *cfg = load_ok(PROVIDERS "    api_key_env: AIGW_TEST_KEY\n" MODELS);

    assert_string_equal(cfg->providers[0].api_key_env, "AIGW_TEST_KEY");
    assert_string_equal(cfg->providers[0].api_key, "sk-test-from-env");
    gw_config_free(cfg);
    unsetenv("AIGW_TEST_KEY");
}

/* Run a load with stderr sent to a file; return what was logged. */
static char *
load_capturing_stderr(const char *text, struct gw_config **cfg)
{
    char logpath[64], err[512];
    static char logged[2048];

    write_temp(logpath, sizeof(logpath), "");
    int fd = open(logpath, O_WRONLY | O_TRUNC);
    int saved = dup(STDERR_FILENO);
    assert_true(fd >= 0 && saved >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    int rc = load_text(text, cfg, err, sizeof(err));
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(rc, 0);

    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    size_t n = fread(logged, 1, sizeof(logged) - 1, f);
    logged[n] = '\0';
    fclose(f);
    unlink(logpath);
    return logged;
}

static void
api_key_env_unset_warns_but_loads(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;

    unsetenv("AIGW_TEST_UNSET_KEY");
    char *logged =
        load_capturing_stderr(PROVIDERS "    api_key_env: AIGW_TEST_UNSET_KEY\n" MODELS, &cfg);

    assert_null(cfg->providers[0].api_key);
    assert_non_null(strstr(logged, "warn"));
    assert_non_null(strstr(logged, "provider \"local\": environment variable AIGW_TEST_UNSET_KEY "
                                   "is not set; requests go without a credential"));
    gw_config_free(cfg);
}

static void
api_key_env_empty_is_unset(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;

    setenv("AIGW_TEST_EMPTY_KEY", "", 1);
    char *logged =
        load_capturing_stderr(PROVIDERS "    api_key_env: AIGW_TEST_EMPTY_KEY\n" MODELS, &cfg);

    assert_null(cfg->providers[0].api_key);
    assert_non_null(strstr(logged, "AIGW_TEST_EMPTY_KEY is not set"));
    gw_config_free(cfg);
    unsetenv("AIGW_TEST_EMPTY_KEY");
}

static void
api_key_env_must_be_a_variable_name(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    api_key_env: $OPENAI_KEY\n" MODELS, 5, 18,
                 "\"providers[0].api_key_env\" must be the name of an environment variable, "
                 "such as OPENAI_API_KEY (got \"$OPENAI_KEY\")");
}

static void
api_key_file_is_read_and_trimmed(void **state)
{
    (void)state;
    char keypath[64], text[1024];

    write_temp(keypath, sizeof(keypath), "sk-test-from-file \n\r\n\n");
    snprintf(text, sizeof(text), PROVIDERS "    api_key_file: %s\n" MODELS, keypath);
    struct gw_config *cfg = load_ok(text);
    unlink(keypath);

    assert_string_equal(cfg->providers[0].api_key_file, keypath);
    assert_string_equal(cfg->providers[0].api_key, "sk-test-from-file");
    gw_config_free(cfg);
}

static void
unreadable_api_key_file(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    api_key_file: /nonexistent/key\n" MODELS, 5, 19,
                 "cannot read api_key_file \"/nonexistent/key\": No such file or directory");
}

static void
empty_api_key_file(void **state)
{
    (void)state;
    char keypath[64], text[1024], msg[256];

    write_temp(keypath, sizeof(keypath), "\n\n");
    snprintf(text, sizeof(text), PROVIDERS "    api_key_file: %s\n" MODELS, keypath);
    snprintf(msg, sizeof(msg), "api_key_file \"%s\" is empty", keypath);
    expect_error(text, 5, 19, msg);
    unlink(keypath);
}

static void
secret_never_appears_in_an_error(void **state)
{
    (void)state;
    char keypath[64], text[1024], msg[256];

    write_temp(keypath, sizeof(keypath), "sk-first-line\nsk-second-line\n");
    snprintf(text, sizeof(text), PROVIDERS "    api_key_file: %s\n" MODELS, keypath);
    snprintf(msg, sizeof(msg), "api_key_file \"%s\" must hold one line without control characters",
             keypath);
    expect_error(text, 5, 19, msg);
    unlink(keypath);
}

static void
api_key_env_and_file_together(void **state)
{
    (void)state;
    expect_error(PROVIDERS "    api_key_env: LOCAL_KEY\n"
                           "    api_key_file: /etc/aigw/local.key\n" MODELS,
                 6, 5, "provider \"local\": set api_key_env or api_key_file, not both");
}

/* ------------------------------------------------------ the worker pool */

static void
workers_integer_is_a_fixed_pool(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("workers: 8\n" MINIMAL);

    assert_int_equal(cfg->workers, 8);
    assert_int_equal(cfg->workers_min_spare, 0);
    assert_int_equal(cfg->workers_max_spare, 0);
    assert_int_equal(cfg->workers_max, 8);
    assert_int_equal(cfg->max_requests, 0);
    gw_config_free(cfg);
}

static void
workers_spares_fill_their_defaults(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("workers: { min_spare: 3 }\n" MINIMAL);

    /* start = min_spare, max_spare = 2 * min_spare, max = 256. */
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->workers_min_spare, 3);
    assert_int_equal(cfg->workers_max_spare, 6);
    assert_int_equal(cfg->workers_max, 256);
    assert_int_equal(cfg->max_requests, 0);
    gw_config_free(cfg);

    /* max grows to take start or max_spare; max_spare shrinks to fit max. */
    cfg = load_ok("workers: { min_spare: 2, start: 300 }\n" MINIMAL);
    assert_int_equal(cfg->workers, 300);
    assert_int_equal(cfg->workers_max, 300);
    assert_int_equal(cfg->workers_max_spare, 4);
    gw_config_free(cfg);
    cfg = load_ok("workers: { min_spare: 2, max_spare: 500 }\n" MINIMAL);
    assert_int_equal(cfg->workers, 2);
    assert_int_equal(cfg->workers_max_spare, 500);
    assert_int_equal(cfg->workers_max, 500);
    gw_config_free(cfg);
    cfg = load_ok("workers: { min_spare: 200, max: 300 }\n" MINIMAL);
    assert_int_equal(cfg->workers, 200);
    assert_int_equal(cfg->workers_max_spare, 300);
    assert_int_equal(cfg->workers_max, 300);
    gw_config_free(cfg);
}

static void
workers_mapping_without_min_spare_is_fixed(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("workers: { start: 6, max: 64, max_requests: 500 }\n" MINIMAL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int dflt = cpus < 2 ? 2 : cpus > 1024 ? 1024 : (int)cpus;

    assert_int_equal(cfg->workers, 6);
    assert_int_equal(cfg->workers_min_spare, 0);
    assert_int_equal(cfg->workers_max_spare, 0);
    assert_int_equal(cfg->workers_max, 6);
    assert_int_equal(cfg->max_requests, 500);
    gw_config_free(cfg);

    /* Without start, as many as without a workers key... */
    cfg = load_ok("workers: { max_requests: 10 }\n" MINIMAL);
    assert_int_equal(cfg->workers, dflt);
    assert_int_equal(cfg->workers_max, dflt);
    assert_int_equal(cfg->max_requests, 10);
    gw_config_free(cfg);
    /* ... but no more than max; min_spare 0 is the same as none. */
    cfg = load_ok("workers: { max: 1, min_spare: 0 }\n" MINIMAL);
    assert_int_equal(cfg->workers, 1);
    assert_int_equal(cfg->workers_max, 1);
    assert_int_equal(cfg->workers_min_spare, 0);
    gw_config_free(cfg);
}

static void
workers_must_be_a_number_or_a_mapping(void **state)
{
    (void)state;
    expect_error("workers: [4]\n" MINIMAL, 1, 10,
                 "\"workers\" must be an integer or a mapping of keys (start, min_spare, "
                 "max_spare, max, max_requests, connections, cpu_affinity)");
}

static void
workers_unknown_key(void **state)
{
    (void)state;
    expect_error("workers: { spare: 2 }\n" MINIMAL, 1, 12,
                 "unknown key \"spare\" in workers (expected one of: start, min_spare, max_spare, "
                 "max, max_requests, connections, cpu_affinity)");
}

static void
workers_cpu_affinity_is_a_boolean(void **state)
{
    (void)state;
    expect_error("workers: { start: 2, cpu_affinity: auto }\n" MINIMAL, 1, 36,
                 "\"workers.cpu_affinity\" must be true or false (got \"auto\")");
}

static void
workers_max_spare_must_exceed_min_spare(void **state)
{
    (void)state;
    expect_error("workers:\n"
                 "  min_spare: 4\n"
                 "  max_spare: 4\n" MINIMAL,
                 3, 3, "\"workers.max_spare\" must be more than workers.min_spare (4)");
}

static void
workers_max_spare_over_max(void **state)
{
    (void)state;
    expect_error("workers:\n"
                 "  min_spare: 2\n"
                 "  max_spare: 80\n"
                 "  max: 64\n" MINIMAL,
                 3, 3, "\"workers.max_spare\" must be at most workers.max (64)");
}

static void
workers_min_spare_not_below_max(void **state)
{
    (void)state;
    expect_error("workers:\n"
                 "  min_spare: 64\n"
                 "  max: 64\n" MINIMAL,
                 2, 3, "\"workers.min_spare\" must be less than workers.max (64)");
}

static void
workers_start_over_max(void **state)
{
    (void)state;
    expect_error("workers:\n"
                 "  start: 100\n"
                 "  min_spare: 2\n"
                 "  max: 64\n" MINIMAL,
                 2, 3, "\"workers.start\" must be at most workers.max (64)");
    expect_error("workers:\n"
                 "  max: 64\n"
                 "  start: 100\n" MINIMAL,
                 3, 3, "\"workers.start\" must be at most workers.max (64)");
}

static void
workers_max_spare_needs_min_spare(void **state)
{
    (void)state;
    expect_error("workers:\n"
                 "  start: 4\n"
                 "  max_spare: 8\n" MINIMAL,
                 3, 3,
                 "\"workers.max_spare\" needs workers.min_spare: without it the pool is fixed at "
                 "workers.start");
}

static void
workers_values_out_of_range(void **state)
{
    (void)state;
    expect_error("workers: { min_spare: 1024 }\n" MINIMAL, 1, 23,
                 "\"workers.min_spare\" must be between 0 and 1023 (got 1024)");
    expect_error("workers: { max: 0 }\n" MINIMAL, 1, 17,
                 "\"workers.max\" must be between 1 and 1024 (got 0)");
    expect_error("workers: { max_requests: -1 }\n" MINIMAL, 1, 26,
                 "\"workers.max_requests\" must be a whole number (got \"-1\")");
    expect_error("workers: { max_requests: 2000000000 }\n" MINIMAL, 1, 26,
                 "\"workers.max_requests\" must be between 0 and 1000000000 (got 2000000000)");
}

static void
shutdown_timeout_is_a_duration(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("shutdown_timeout: 10s\n" MINIMAL);

    assert_int_equal(cfg->shutdown_timeout_ms, 10000);
    gw_config_free(cfg);
    expect_error("shutdown_timeout: 0\n" MINIMAL, 1, 19,
                 "\"shutdown_timeout\" must be longer than zero (got \"0\")");
    expect_error("shutdown_timeout: soon\n" MINIMAL, 1, 19,
                 "\"shutdown_timeout\" must be a duration such as 500ms, 30s, 5m or 1h (got "
                 "\"soon\")");
}

/* --------------------------------------------------------- user, group */

static void
user_and_group_must_exist(void **state)
{
    (void)state;
    char text[512];
    struct passwd *pw = getpwuid(0);
    struct group *gr = getgrgid(0);

    if (pw == NULL || gr == NULL)
        skip();
    char *user = strdup(pw->pw_name), *group = strdup(gr->gr_name);
    snprintf(text, sizeof(text), "group: %s\nuser: %s\n" MINIMAL, group, user);
    struct gw_config *cfg = load_ok(text);
    assert_string_equal(cfg->user, user);
    assert_string_equal(cfg->group, group);
    gw_config_free(cfg);

    snprintf(text, sizeof(text), "user: %s\n" MINIMAL, user);
    cfg = load_ok(text);
    assert_string_equal(cfg->user, user);
    assert_null(cfg->group);
    gw_config_free(cfg);

    /* A number is an id. */
    cfg = load_ok("user: 0\ngroup: \"0\"\n" MINIMAL);
    assert_string_equal(cfg->user, "0");
    assert_string_equal(cfg->group, "0");
    gw_config_free(cfg);

    snprintf(text, sizeof(text), "user: %s\ngroup: no-such-group-aigw\n" MINIMAL, user);
    expect_error(text, 2, 8, "no such group \"no-such-group-aigw\"");
    free(user);
    free(group);
}

static void
unknown_user_is_refused(void **state)
{
    (void)state;
    expect_error("user: no-such-user-aigw\n" MINIMAL, 1, 7, "no such user \"no-such-user-aigw\"");
    expect_error("user: [aigw]\n" MINIMAL, 1, 7, "\"user\" must be the name of a user");
}

static void
group_without_user_is_refused(void **state)
{
    (void)state;
    char text[512];
    struct group *gr = getgrgid(0);

    if (gr == NULL)
        skip();
    snprintf(text, sizeof(text), "state_dir: /x\ngroup: %s\n" MINIMAL, gr->gr_name);
    expect_error(text, 2, 1, "\"group\" is set without \"user\"; name the user to run as too");
}

/* ------------------------------------------------------------------ logs */

static void
access_file_journal_means_journald(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("log: { access_file: journal }\n" MINIMAL);

    assert_true(cfg->access_journal);
    assert_null(cfg->access_file);
    assert_null(cfg->log_file);
    gw_config_free(cfg);
    cfg = load_ok("log: { file: ./run/error.log, access_file: ./journal }\n" MINIMAL);
    assert_false(cfg->access_journal);
    assert_string_equal(cfg->access_file, "./journal");
    assert_string_equal(cfg->log_file, "./run/error.log");
    gw_config_free(cfg);
}

static void
access_buffer_is_a_size_and_access_flush_a_duration(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MINIMAL);

    assert_int_equal(cfg->access_buffer, 0); /* a write per line */
    assert_int_equal(cfg->access_flush_ms, 1000);
    gw_config_free(cfg);
    cfg = load_ok("log: { access_buffer: 64k, access_flush: 250ms }\n" MINIMAL);
    assert_int_equal(cfg->access_buffer, 65536);
    assert_int_equal(cfg->access_flush_ms, 250);
    gw_config_free(cfg);
    expect_error("log: { access_buffer: 32m }\n" MINIMAL, 1, 23,
                 "\"log.access_buffer\" must be between 0 and 16m (got 32m)");
    expect_error("log: { access_flush: 2h }\n" MINIMAL, 1, 22,
                 "\"log.access_flush\" must be between 1ms and 1h (got 2h)");
}

static void
log_paths_must_be_strings(void **state)
{
    (void)state;
    expect_error("log: { file: \"\" }\n" MINIMAL, 1, 14, "\"log.file\" must not be empty");
    expect_error("log: { access_file: [a] }\n" MINIMAL, 1, 21,
                 "\"log.access_file\" must be a path or journal");
}

/* --------------------------------------------------------------- metrics */

static void
metrics_listen_and_its_default(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok("metrics: {}\n" MINIMAL);

    assert_string_equal(cfg->metrics_listen, "127.0.0.1:9464");
    gw_config_free(cfg);
    cfg = load_ok("metrics:\n  listen: \"[::1]:9100\"\n" MINIMAL);
    assert_string_equal(cfg->metrics_listen, "[::1]:9100");
    gw_config_free(cfg);
    /* The same port on other hosts is no clash. */
    cfg = load_ok("listen: [\"0.0.0.0:9000\", \"127.0.0.1:8080\"]\n"
                  "metrics: { listen: \"[::1]:9000\" }\n" MINIMAL);
    assert_string_equal(cfg->metrics_listen, "[::1]:9000");
    gw_config_free(cfg);
    cfg = load_ok("metrics: { listen: \"127.0.0.2:8080\" }\n" MINIMAL);
    assert_string_equal(cfg->metrics_listen, "127.0.0.2:8080");
    gw_config_free(cfg);
}

static void
metrics_listen_is_checked_like_listen(void **state)
{
    (void)state;
    expect_error("metrics: { listen: 127.0.0.1 }\n" MINIMAL, 1, 20,
                 "\"metrics.listen\" must be host:port, such as 127.0.0.1:8080 (got "
                 "\"127.0.0.1\")");
    expect_error("metrics: { listen: \"127.0.0.1:0\" }\n" MINIMAL, 1, 20,
                 "\"metrics.listen\": port must be a number from 1 to 65535 (got \"0\")");
    expect_error("metrics: { port: 9464 }\n" MINIMAL, 1, 12,
                 "unknown key \"port\" in metrics (expected one of: listen)");
    expect_error("metrics: 9464\n" MINIMAL, 1, 10,
                 "\"metrics\" must be a mapping of keys (listen)");
}

static void
metrics_listen_must_not_be_a_listen_address(void **state)
{
    (void)state;
    expect_error("listen: \"127.0.0.1:8080\"\n"
                 "metrics: { listen: \"127.0.0.1:8080\" }\n" MINIMAL,
                 2, 20,
                 "\"metrics.listen\" \"127.0.0.1:8080\" clashes with the listen address "
                 "\"127.0.0.1:8080\"; metrics need an address of their own");
    /* The default listen address counts too. */
    expect_error("metrics: { listen: \"127.0.0.1:8080\" }\n" MINIMAL, 1, 20,
                 "\"metrics.listen\" \"127.0.0.1:8080\" clashes with the listen address "
                 "\"127.0.0.1:8080\"; metrics need an address of their own");
    /* A listener on every address takes the port on each of them; listen may come later. */
    expect_error("metrics: {}\n"
                 "listen: [\"127.0.0.1:8080\", \":9464\"]\n" MINIMAL,
                 1, 10,
                 "\"metrics.listen\" \"127.0.0.1:9464\" clashes with the listen address "
                 "\":9464\"; metrics need an address of their own");
    expect_error("listen: \"127.0.0.1:9000\"\n"
                 "metrics: { listen: \"*:9000\" }\n" MINIMAL,
                 2, 20,
                 "\"metrics.listen\" \"*:9000\" clashes with the listen address "
                 "\"127.0.0.1:9000\"; metrics need an address of their own");
}

/* ----------------------------------------------------------- admin API */

static void
admin_listen_one_or_many_none_by_default(void **state)
{
    (void)state;
    struct gw_config *cfg = load_ok(MINIMAL);

    assert_int_equal(cfg->nadmin_listen, 0);
    gw_config_free(cfg);
    cfg = load_ok("admin: { listen: \"127.0.0.1:8081\" }\n" MINIMAL);
    assert_int_equal(cfg->nadmin_listen, 1);
    assert_string_equal(cfg->admin_listen[0], "127.0.0.1:8081");
    gw_config_free(cfg);
    cfg = load_ok("admin:\n  listen: [\"127.0.0.1:8081\", \"[::1]:8081\"]\n" MINIMAL);
    assert_int_equal(cfg->nadmin_listen, 2);
    assert_string_equal(cfg->admin_listen[1], "[::1]:8081");
    gw_config_free(cfg);
}

static void
admin_listen_is_checked_and_needs_its_own_address(void **state)
{
    (void)state;
    expect_error("admin: { listen: 8081 }\n" MINIMAL, 1, 18,
                 "\"admin.listen\" must be host:port, such as 127.0.0.1:8080 (got \"8081\")");
    expect_error("admin: { listen: [\"127.0.0.1:8081\", \"127.0.0.1:8081\"] }\n" MINIMAL, 1, 37,
                 "\"admin.listen[1]\": \"127.0.0.1:8081\" is listed twice");
    expect_error("listen: \"127.0.0.1:8080\"\n"
                 "admin: { listen: [\"127.0.0.1:8081\", \"*:8080\"] }\n" MINIMAL,
                 2, 37,
                 "\"admin.listen\" \"*:8080\" clashes with the listen address "
                 "\"127.0.0.1:8080\"; the admin API needs an address of its own");
    expect_error("metrics: { listen: \"127.0.0.1:9464\" }\n"
                 "admin: { listen: \"127.0.0.1:9464\" }\n" MINIMAL,
                 2, 18,
                 "\"admin.listen\" \"127.0.0.1:9464\" clashes with the metrics.listen address "
                 "\"127.0.0.1:9464\"; the admin API needs an address of its own");
}

/* --------------------------------------------------------- shipped files */

/* etc/ files load as they are; skipped when the tests run outside the repository. */
static void
shipped_configs_load(void **state)
{
    (void)state;
    static const char *const files[] = {"etc/aigw.dev.yaml", "etc/aigw.yaml"};

    if (access(files[0], R_OK) != 0)
        skip();
    /* Their providers' key variables are unset here: no warnings in the output. */
    int level = gw_log_level;
    gw_log_level = GW_LOG_ERROR;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct gw_config *cfg = NULL;
        char err[512] = "";
        int rc = gw_master_config_load(files[i], &cfg, err, sizeof(err));
        if (rc != 0)
            fail_msg("%s", err);
        assert_true(cfg->nproviders > 0 && cfg->nmodels > 0);
        gw_config_free(cfg);
    }
    gw_log_level = level;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_example_loads_every_value),
        cmocka_unit_test(defaults_fill_unset_keys),
        cmocka_unit_test(usage_retention_defaults),
        cmocka_unit_test(usage_retention_values),
        cmocka_unit_test(usage_detail_forever_keeps_default_aggregates_forever),
        cmocka_unit_test(usage_retention_errors),
        cmocka_unit_test(listen_accepts_a_single_string),
        cmocka_unit_test(listen_accepts_every_host_form),
        cmocka_unit_test(admin_mode_is_octal_quoted_or_not),
        cmocka_unit_test(bool_accepts_yes_no_on_off),
        cmocka_unit_test(base_url_loses_trailing_slashes),
        cmocka_unit_test(providers_may_follow_models),
        cmocka_unit_test(parse_duration_reads_every_unit),
        cmocka_unit_test(parse_duration_rejects_bad_text),
        cmocka_unit_test(parse_size_reads_every_multiple),
        cmocka_unit_test(parse_size_rejects_bad_text),
        cmocka_unit_test(missing_file_is_an_io_error),
        cmocka_unit_test(empty_file_is_an_error),
        cmocka_unit_test(comment_only_file_is_empty),
        cmocka_unit_test(top_level_must_be_a_mapping),
        cmocka_unit_test(yaml_syntax_error_at_problem_mark),
        cmocka_unit_test(yaml_unclosed_flow_sequence),
        cmocka_unit_test(unquoted_star_address_gets_a_hint),
        cmocka_unit_test(invalid_utf8_is_located),
        cmocka_unit_test(two_documents_are_refused),
        cmocka_unit_test(alias_is_refused),
        cmocka_unit_test(unknown_top_level_key),
        cmocka_unit_test(model_type_context_and_secrets),
        cmocka_unit_test(unknown_key_in_provider),
        cmocka_unit_test(unknown_key_in_model_timeouts),
        cmocka_unit_test(workers_must_be_an_integer),
        cmocka_unit_test(workers_out_of_range),
        cmocka_unit_test(section_must_be_a_mapping),
        cmocka_unit_test(string_must_not_be_a_list),
        cmocka_unit_test(duplicate_key_points_at_the_second),
        cmocka_unit_test(duplicate_key_in_nested_mapping),
        cmocka_unit_test(duplicate_provider_name),
        cmocka_unit_test(duplicate_model_name),
        cmocka_unit_test(dangling_provider_reference),
        cmocka_unit_test(missing_required_key_points_at_the_mapping),
        cmocka_unit_test(missing_required_key_in_flow_mapping),
        cmocka_unit_test(missing_providers_at_top),
        cmocka_unit_test(empty_model_list),
        cmocka_unit_test(unsupported_provider_type),
        cmocka_unit_test(bad_provider_name),
        cmocka_unit_test(base_url_needs_a_scheme),
        cmocka_unit_test(base_url_needs_a_host),
        cmocka_unit_test(base_url_must_not_hold_credentials),
        cmocka_unit_test(bad_duration),
        cmocka_unit_test(zero_duration),
        cmocka_unit_test(duration_over_a_day),
        cmocka_unit_test(bad_size),
        cmocka_unit_test(size_out_of_range),
        cmocka_unit_test(bad_port),
        cmocka_unit_test(port_zero_is_refused),
        cmocka_unit_test(listen_needs_host_and_port),
        cmocka_unit_test(ipv6_listen_needs_brackets),
        cmocka_unit_test(bad_ipv4_listen_address),
        cmocka_unit_test(duplicate_listen_address),
        cmocka_unit_test(admin_mode_refuses_world_bits),
        cmocka_unit_test(admin_mode_must_be_octal),
        cmocka_unit_test(log_level_must_be_known),
        cmocka_unit_test(long_admin_socket_path),
        cmocka_unit_test(api_key_env_is_resolved),
        cmocka_unit_test(api_key_env_unset_warns_but_loads),
        cmocka_unit_test(api_key_env_empty_is_unset),
        cmocka_unit_test(api_key_env_must_be_a_variable_name),
        cmocka_unit_test(api_key_file_is_read_and_trimmed),
        cmocka_unit_test(unreadable_api_key_file),
        cmocka_unit_test(empty_api_key_file),
        cmocka_unit_test(secret_never_appears_in_an_error),
        cmocka_unit_test(api_key_env_and_file_together),
        cmocka_unit_test(workers_integer_is_a_fixed_pool),
        cmocka_unit_test(workers_spares_fill_their_defaults),
        cmocka_unit_test(workers_mapping_without_min_spare_is_fixed),
        cmocka_unit_test(workers_must_be_a_number_or_a_mapping),
        cmocka_unit_test(workers_unknown_key),
        cmocka_unit_test(workers_cpu_affinity_is_a_boolean),
        cmocka_unit_test(workers_max_spare_must_exceed_min_spare),
        cmocka_unit_test(workers_max_spare_over_max),
        cmocka_unit_test(workers_min_spare_not_below_max),
        cmocka_unit_test(workers_start_over_max),
        cmocka_unit_test(workers_max_spare_needs_min_spare),
        cmocka_unit_test(workers_values_out_of_range),
        cmocka_unit_test(shutdown_timeout_is_a_duration),
        cmocka_unit_test(user_and_group_must_exist),
        cmocka_unit_test(unknown_user_is_refused),
        cmocka_unit_test(group_without_user_is_refused),
        cmocka_unit_test(access_file_journal_means_journald),
        cmocka_unit_test(log_paths_must_be_strings),
        cmocka_unit_test(access_buffer_is_a_size_and_access_flush_a_duration),
        cmocka_unit_test(metrics_listen_and_its_default),
        cmocka_unit_test(metrics_listen_is_checked_like_listen),
        cmocka_unit_test(metrics_listen_must_not_be_a_listen_address),
        cmocka_unit_test(admin_listen_one_or_many_none_by_default),
        cmocka_unit_test(admin_listen_is_checked_and_needs_its_own_address),
        cmocka_unit_test(shipped_configs_load),
    };

    gw_log_init("test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
