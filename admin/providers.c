/*
 * providers.c - aigwctl provider add|list|test|delete: a tenant's own
 * credentials for configured providers (BYOK; master/providers.c).
 *
 * add reads the secret from --api-key-file here, as the administrator who
 * runs aigwctl, and sends it to the master, which seals and stores it; it
 * is never printed, here or by any other command.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin.h"

/* The master's test call takes up to 10 s. */
#define PROVIDER_TEST_TIMEOUT_S 30
#define PROVIDER_KEY_FILE_MAX (64 * 1024)

/* Read the secret file path into a new heap string (NULL on failure,
 * after saying why). */
static char *
secret_read(const char *path)
{
    char *buf = malloc(PROVIDER_KEY_FILE_MAX + 1);
    size_t len = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || buf == NULL) {
        fprintf(stderr, "aigwctl: cannot read %s: %s\n", path, strerror(errno));
        goto fail;
    }
    while ((n = read(fd, buf + len, PROVIDER_KEY_FILE_MAX + 1 - len)) > 0)
        len += (size_t)n;
    if (n < 0) {
        fprintf(stderr, "aigwctl: cannot read %s: %s\n", path, strerror(errno));
        goto fail;
    }
    if (len > PROVIDER_KEY_FILE_MAX) {
        fprintf(stderr, "aigwctl: %s is larger than %d bytes: not an API key\n", path,
                PROVIDER_KEY_FILE_MAX);
        goto fail;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
fail:
    if (buf != NULL) {
        explicit_bzero(buf, PROVIDER_KEY_FILE_MAX + 1);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void
provider_print_header(void)
{
    printf("%-20s  %-12s  %-9s  %-14s  %-19s  %-20s  %s\n", "NAME", "TENANT", "TYPE", "FOR",
           "FINGERPRINT", "CREATED", "STATUS");
}

static void
provider_print_row(struct json_object *p)
{
    char created[32];
    struct json_object *v;
    bool active = json_object_object_get_ex(p, "active", &v) && json_object_get_boolean(v);

    gw_admin_time_format(p, created, sizeof(created));
    printf("%-20s  %-12s  %-9s  %-14s  %-19s  %-20s  %s%s%s\n", gw_admin_field(p, "name"),
           gw_admin_field(p, "tenant"), gw_admin_field(p, "type"), gw_admin_field(p, "for"),
           gw_admin_field(p, "fingerprint"), created, active ? "active" : "inactive",
           active ? "" : ": ", active ? "" : gw_admin_field(p, "note"));
}

static int
provider_add(int argc, char **argv)
{
    struct json_object *req = gw_admin_request("provider.add"), *reply = NULL, *p;
    const char *name = NULL, *file = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--json") == 0) {
            gw_admin_json_set();
        } else if (strcmp(opt, "--api-key-file") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if ((strcmp(opt, "--type") == 0 || strcmp(opt, "--tenant") == 0 ||
                    strcmp(opt, "--base-url") == 0 || strcmp(opt, "--for") == 0) &&
                   i + 1 < argc) {
            json_object_object_add(req, strcmp(opt, "--base-url") == 0 ? "base_url" : opt + 2,
                                   json_object_new_string(argv[++i]));
        } else if (name == NULL && opt[0] != '-') {
            name = opt;
        } else {
            json_object_put(req);
            return gw_admin_usage_error("provider add: unknown or incomplete argument %s", opt);
        }
    }
    if (name == NULL || file == NULL || !json_object_object_get_ex(req, "type", NULL) ||
        !json_object_object_get_ex(req, "tenant", NULL)) {
        json_object_put(req);
        return gw_admin_usage_error("provider add: %s",
                                    "give NAME --type TYPE --tenant T --api-key-file F");
    }
    char *secret = secret_read(file);
    if (secret == NULL) {
        json_object_put(req);
        return GW_ADMIN_EXIT_REFUSED;
    }
    json_object_object_add(req, "name", json_object_new_string(name));
    json_object_object_add(req, "api_key", json_object_new_string(secret));
    explicit_bzero(secret, strlen(secret));
    free(secret);
    if ((rc = gw_admin_call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "provider", &p);
    if (gw_admin_json()) {
        gw_admin_print_json(reply, "provider");
    } else {
        provider_print_header();
        provider_print_row(p);
    }
    json_object_put(reply);
    return 0;
}

static int
provider_list(int argc, char **argv)
{
    struct json_object *req = gw_admin_request("provider.list"), *reply = NULL, *arr;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            gw_admin_json_set();
        } else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc) {
            json_object_object_add(req, "tenant", json_object_new_string(argv[++i]));
        } else {
            json_object_put(req);
            return gw_admin_usage_error("provider list: unknown or incomplete argument %s",
                                        argv[i]);
        }
    }
    if ((rc = gw_admin_call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "providers", &arr);
    if (gw_admin_json()) {
        gw_admin_print_json(reply, "providers");
    } else {
        provider_print_header();
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            provider_print_row(json_object_array_get_idx(arr, i));
    }
    json_object_put(reply);
    return 0;
}

/* test and delete: one name. */
static int
provider_named(const char *cmd, int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *v;
    const char *name;
    char what[32];
    int rc;

    snprintf(what, sizeof(what), "provider %s", strchr(cmd, '.') + 1);
    if ((rc = gw_admin_one_operand(argc, argv, what, "which credential? give its NAME", &name)) !=
        0)
        return rc;
    req = gw_admin_request(cmd);
    json_object_object_add(req, "name", json_object_new_string(name));
    if (strcmp(cmd, "provider.test") == 0)
        gw_admin_timeout_set(PROVIDER_TEST_TIMEOUT_S);
    if ((rc = gw_admin_call(req, &reply)) != 0)
        return rc;
    if (strcmp(cmd, "provider.delete") == 0) {
        if (gw_admin_json())
            puts("{ \"ok\": true }");
        else
            printf("provider credential %s deleted\n", name);
        json_object_put(reply);
        return 0;
    }
    bool passed = json_object_object_get_ex(reply, "passed", &v) && json_object_get_boolean(v);
    if (gw_admin_json()) {
        json_object_object_del(reply, "ok");
        gw_admin_print_json(reply, NULL);
    } else {
        double ms =
            json_object_object_get_ex(reply, "latency_ms", &v) ? json_object_get_double(v) : 0;
        bool has_err = json_object_object_get_ex(reply, "error", &v) && v != NULL;
        printf("%s: %s via %s, status %s, %.1f ms%s%s\n", name, passed ? "passed" : "FAILED",
               gw_admin_field(reply, "target"), gw_admin_field(reply, "status"), ms,
               has_err ? ": " : "", has_err ? json_object_get_string(v) : "");
    }
    json_object_put(reply);
    return passed ? 0 : GW_ADMIN_EXIT_REFUSED;
}

int
gw_admin_provider(int argc, char **argv)
{
    if (argc < 1)
        return gw_admin_usage_error("provider: %s", "which subcommand? add, list, test, delete");
    if (strcmp(argv[0], "add") == 0)
        return provider_add(argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return provider_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "test") == 0)
        return provider_named("provider.test", argc - 1, argv + 1);
    if (strcmp(argv[0], "delete") == 0)
        return provider_named("provider.delete", argc - 1, argv + 1);
    return gw_admin_usage_error("provider: unknown subcommand %s", argv[0]);
}
