/*
 * accounts.c - tenants, users, roles and grants, key rotation and the
 * audit log: the admin commands behind "aigwctl tenant|user|grant|revoke|
 * audit|key rotate", who the caller of the admin socket is (or whom a
 * worker acts for, for the HTTP admin API), and what each caller may run:
 * the one permission table of every admin command (permit, below).
 *
 * Records live in LMDB (shm/store.c) as JSON: a tenant {"name","created"},
 * a user {"name","tenant","uid","created","grants":[{"role","model"}]}.
 * Keys read their owner's grants when a worker looks them up, so every
 * change here that affects calls bumps keys_generation: workers drop the
 * keys they cached and the change is in force at the next request.
 */
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "master/master.h"

#define ACCOUNT_NAME_MAX 64
#define AUDIT_DEFAULT_LIMIT 100

static const char *
field(struct json_object *o, const char *name)
{
    struct json_object *v;

    return json_object_object_get_ex(o, name, &v) ? json_object_get_string(v) : "";
}

/* Names of tenants and users: letters, digits, '.', '_', '-', '@'. */
static bool
name_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (n == 0 || n > ACCOUNT_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-' || *s == '@'))
            return false;
    return true;
}

/* A record of db as a new JSON object (owned by the caller), or NULL. */
static struct json_object *
rec_get(struct gw_master *m, enum gw_store_db db, const char *name, struct gw_arena *a, int *rc)
{
    char *json;

    if ((*rc = gw_store_rec_get(m->store, db, name, a, &json)) != 0)
        return NULL;
    struct json_object *o = json_tokener_parse(json);
    if (o == NULL)
        *rc = GW_ESTORE;
    return o;
}

static int
rec_put(struct gw_master *m, enum gw_store_db db, const char *name, struct json_object *o,
        bool create_only)
{
    return gw_store_rec_put(m->store, db, name,
                            json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), create_only);
}

/* Every record of db, parsed, in a new JSON array (owned by the caller). */
static struct json_object *
rec_all(struct gw_master *m, enum gw_store_db db, struct gw_arena *a, int *rc)
{
    struct json_object *arr = json_object_new_array();
    char **recs;
    size_t n;

    if ((*rc = gw_store_rec_list(m->store, db, false, 0, a, &recs, &n)) != 0)
        return arr;
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_tokener_parse(recs[i]);
        if (o != NULL)
            json_object_array_add(arr, o);
    }
    return arr;
}

static struct json_object *
user_grants(struct json_object *user)
{
    struct json_object *g;

    if (!json_object_object_get_ex(user, "grants", &g) ||
        !json_object_is_type(g, json_type_array)) {
        g = json_object_new_array();
        json_object_object_add(user, "grants", g);
    }
    return g;
}

static bool
user_is_admin(struct json_object *user)
{
    struct json_object *g = user_grants(user);

    for (size_t i = 0; i < json_object_array_length(g); i++)
        if (strcmp(field(json_object_array_get_idx(g, i), "role"), "gateway-admin") == 0)
            return true;
    return false;
}

/* How many users hold gateway-admin. */
static size_t
admins_count(struct gw_master *m, struct gw_arena *a)
{
    int rc;
    struct json_object *users = rec_all(m, GW_DB_USERS, a, &rc);
    size_t n = 0;

    for (size_t i = 0; i < json_object_array_length(users); i++)
        n += user_is_admin(json_object_array_get_idx(users, i));
    json_object_put(users);
    return n;
}

static void
keys_changed(struct gw_master *m)
{
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
}

/* ------------------------------------------------------------- callers */

static bool
in_admin_group(uid_t uid, gid_t gid)
{
    struct group *gr = getgrnam("aigw");
    struct passwd *pw;

    if (gr == NULL)
        return false;
    if (gid == gr->gr_gid)
        return true;
    if ((pw = getpwuid(uid)) == NULL)
        return false;
    gid_t groups[256];
    int n = 256;
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
        return false;
    for (int i = 0; i < n; i++)
        if (groups[i] == gr->gr_gid)
            return true;
    return false;
}

int
gw_master_accounts_caller(struct gw_master *m, uid_t uid, gid_t gid, struct gw_caller *out)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct json_object *users = NULL, *user = NULL;
    int rc = GW_EPERM;

    memset(out, 0, sizeof(*out));
    out->uid = uid;
    out->admin = uid == 0 || uid == geteuid() || in_admin_group(uid, gid);
    if (a == NULL)
        return GW_ENOMEM;
    users = rec_all(m, GW_DB_USERS, a, &rc);
    for (size_t i = 0; i < json_object_array_length(users) && user == NULL; i++) {
        struct json_object *u = json_object_array_get_idx(users, i), *v;
        if (json_object_object_get_ex(u, "uid", &v) && json_object_get_int64(v) == (int64_t)uid)
            user = u;
    }
    if (user != NULL) {
        snprintf(out->name, sizeof(out->name), "%s", field(user, "name"));
        out->admin = out->admin || user_is_admin(user);
        rc = 0;
    } else if (out->admin) {
        struct passwd *pw = getpwuid(uid);
        if (pw != NULL)
            snprintf(out->name, sizeof(out->name), "%s", pw->pw_name);
        else
            snprintf(out->name, sizeof(out->name), "uid%ld", (long)uid);
        rc = 0;
    } else {
        rc = GW_EPERM;
    }
    json_object_put(users);
    gw_arena_destroy(a);
    return rc;
}

/* ------------------------------------------------------------- tenants */

static struct json_object *
users_of(struct gw_master *m, const char *tenant, struct gw_arena *a)
{
    int rc;
    struct json_object *users = rec_all(m, GW_DB_USERS, a, &rc), *out = json_object_new_array();

    for (size_t i = 0; i < json_object_array_length(users); i++) {
        struct json_object *u = json_object_array_get_idx(users, i);
        if (strcmp(field(u, "tenant"), tenant) == 0)
            json_object_array_add(out, json_object_new_string(field(u, "name")));
    }
    json_object_put(users);
    return out;
}

static struct json_object *
cmd_tenant_add(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
               struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    struct json_object *t;
    int rc;

    (void)c, (void)a;
    if (!name_valid(name))
        return gw_master_reply_error(
            "a tenant needs a name of 1 to %d letters, digits, '.', '_', '-', '@'",
            ACCOUNT_NAME_MAX);
    t = json_object_new_object();
    json_object_object_add(t, "name", json_object_new_string(name));
    json_object_object_add(t, "created", json_object_new_int64(time(NULL)));
    rc = rec_put(m, GW_DB_TENANTS, name, t, true);
    if (rc != 0) {
        json_object_put(t);
        return rc == GW_EEXIST
                   ? gw_master_reply_error("tenant \"%s\" exists", name)
                   : gw_master_reply_error("could not store tenant: %s", gw_strerror(rc));
    }
    gw_log(GW_LOG_INFO, "tenant %s added", name);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "tenant", t);
    return o;
}

static struct json_object *
cmd_tenant_list(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
                struct gw_arena *a)
{
    int rc;
    struct json_object *ts = rec_all(m, GW_DB_TENANTS, a, &rc);

    (void)c, (void)req;
    if (rc != 0) {
        json_object_put(ts);
        return gw_master_reply_error("could not list tenants: %s", gw_strerror(rc));
    }
    for (size_t i = 0; i < json_object_array_length(ts); i++) {
        struct json_object *t = json_object_array_get_idx(ts, i);
        json_object_object_add(t, "users", users_of(m, field(t, "name"), a));
    }
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "tenants", ts);
    return o;
}

static struct json_object *
cmd_tenant_show(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
                struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    int rc;
    struct json_object *t;

    (void)c;
    if (name == NULL)
        return gw_master_reply_error("which tenant? (give its name)");
    if ((t = rec_get(m, GW_DB_TENANTS, name, a, &rc)) == NULL)
        return rc == GW_ENOENT
                   ? gw_master_reply_error("no tenant \"%s\"", name)
                   : gw_master_reply_error("could not read tenant: %s", gw_strerror(rc));
    json_object_object_add(t, "users", users_of(m, name, a));
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "tenant", t);
    return o;
}

static struct json_object *
cmd_tenant_delete(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
                  struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    int rc;

    (void)c;
    if (name == NULL)
        return gw_master_reply_error("which tenant? (give its name)");
    struct json_object *users = users_of(m, name, a);
    size_t n = json_object_array_length(users);
    json_object_put(users);
    if (n > 0)
        return gw_master_reply_error("tenant \"%s\" still has %zu user(s): delete them first", name,
                                     n);
    if ((rc = gw_store_rec_del(m->store, GW_DB_TENANTS, name)) != 0)
        return rc == GW_ENOENT
                   ? gw_master_reply_error("no tenant \"%s\"", name)
                   : gw_master_reply_error("could not delete tenant: %s", gw_strerror(rc));
    gw_log(GW_LOG_INFO, "tenant %s deleted", name);
    return gw_master_reply_ok();
}

/* --------------------------------------------------------------- users */

static struct json_object *
cmd_user_add(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
             struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name"),
               *tenant = gw_master_arg_string(req, "tenant");
    struct json_object *t, *v;
    int64_t uid = -1;
    int rc;

    (void)c;
    if (!name_valid(name))
        return gw_master_reply_error(
            "a user needs a name of 1 to %d letters, digits, '.', '_', '-', '@'", ACCOUNT_NAME_MAX);
    if (tenant == NULL)
        return gw_master_reply_error("a user belongs to a tenant (--tenant T)");
    if ((t = rec_get(m, GW_DB_TENANTS, tenant, a, &rc)) == NULL)
        return rc == GW_ENOENT
                   ? gw_master_reply_error("no tenant \"%s\" (add it with aigwctl tenant add)",
                                           tenant)
                   : gw_master_reply_error("could not read tenant: %s", gw_strerror(rc));
    json_object_put(t);
    if (json_object_object_get_ex(req, "uid", &v)) {
        uid = json_object_get_int64(v);
        if (uid < 0 || uid > 0x7fffffff)
            return gw_master_reply_error("--uid must be a number from 0 to 2147483647");
        struct json_object *users = rec_all(m, GW_DB_USERS, a, &rc);
        const char *taken = NULL;
        for (size_t i = 0; i < json_object_array_length(users) && taken == NULL; i++) {
            struct json_object *u = json_object_array_get_idx(users, i), *x;
            if (json_object_object_get_ex(u, "uid", &x) && json_object_get_int64(x) == uid)
                taken = gw_arena_strdup(a, field(u, "name"));
        }
        json_object_put(users);
        if (taken != NULL)
            return gw_master_reply_error("uid %lld is already user \"%s\"", (long long)uid, taken);
    }
    struct json_object *u = json_object_new_object();
    json_object_object_add(u, "name", json_object_new_string(name));
    json_object_object_add(u, "tenant", json_object_new_string(tenant));
    if (uid >= 0)
        json_object_object_add(u, "uid", json_object_new_int64(uid));
    json_object_object_add(u, "created", json_object_new_int64(time(NULL)));
    json_object_object_add(u, "grants", json_object_new_array());
    if ((rc = rec_put(m, GW_DB_USERS, name, u, true)) != 0) {
        json_object_put(u);
        return rc == GW_EEXIST ? gw_master_reply_error("user \"%s\" exists", name)
                               : gw_master_reply_error("could not store user: %s", gw_strerror(rc));
    }
    keys_changed(m);
    gw_log(GW_LOG_INFO, "user %s added to tenant %s", name, tenant);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "user", u);
    return o;
}

static struct json_object *
cmd_user_list(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
              struct gw_arena *a)
{
    int rc;
    struct json_object *us = rec_all(m, GW_DB_USERS, a, &rc);

    (void)c, (void)req;
    if (rc != 0) {
        json_object_put(us);
        return gw_master_reply_error("could not list users: %s", gw_strerror(rc));
    }
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "users", us);
    return o;
}

static struct json_object *
cmd_user_show(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
              struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    struct json_object *u;
    struct gw_key **keys;
    size_t n;
    int rc;

    (void)c;
    if (name == NULL)
        return gw_master_reply_error("which user? (give the name)");
    if ((u = rec_get(m, GW_DB_USERS, name, a, &rc)) == NULL)
        return rc == GW_ENOENT ? gw_master_reply_error("no user \"%s\"", name)
                               : gw_master_reply_error("could not read user: %s", gw_strerror(rc));
    user_grants(u);
    struct json_object *owned = json_object_new_array();
    if (gw_store_key_list(m->store, a, &keys, &n) == 0)
        for (size_t i = 0; i < n; i++)
            if (strcmp(keys[i]->owner, name) == 0)
                json_object_array_add(owned, json_object_new_string(keys[i]->id));
    json_object_object_add(u, "keys", owned);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "user", u);
    return o;
}

static struct json_object *
cmd_user_delete(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
                struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    struct json_object *u;
    int rc;

    if (name == NULL)
        return gw_master_reply_error("which user? (give the name)");
    if (strcmp(name, c->name) == 0)
        return gw_master_reply_error("you cannot delete yourself (user \"%s\")", name);
    if ((u = rec_get(m, GW_DB_USERS, name, a, &rc)) == NULL)
        return rc == GW_ENOENT ? gw_master_reply_error("no user \"%s\"", name)
                               : gw_master_reply_error("could not read user: %s", gw_strerror(rc));
    bool admin = user_is_admin(u);
    json_object_put(u);
    if (admin && admins_count(m, a) <= 1)
        return gw_master_reply_error(
            "\"%s\" is the last gateway admin: grant gateway-admin to another "
            "user first",
            name);
    if ((rc = gw_store_rec_del(m->store, GW_DB_USERS, name)) != 0)
        return gw_master_reply_error("could not delete user: %s", gw_strerror(rc));
    keys_changed(m);
    gw_log(GW_LOG_INFO, "user %s deleted", name);
    return gw_master_reply_ok();
}

/* -------------------------------------------------------------- grants */

static bool
role_known(const char *role)
{
    for (size_t i = 0; role != NULL && gw_role_names[i] != NULL; i++)
        if (strcmp(role, gw_role_names[i]) == 0)
            return true;
    return false;
}

/* grant and revoke: check the arguments, then add or remove the grant. */
static struct json_object *
grant_change(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
             struct gw_arena *a, bool add)
{
    const char *name = gw_master_arg_string(req, "user"), *role = gw_master_arg_string(req, "role");
    const char *model = gw_master_arg_string(req, "model");
    struct json_object *u, *grants;
    int rc;

    if (name == NULL)
        return gw_master_reply_error("which user? (give the name)");
    if (!role_known(role))
        return gw_master_reply_error("unknown role \"%s\" (gateway-admin, endpoint-admin, "
                                     "endpoint-operator, endpoint-user, endpoint-viewer)",
                                     role ? role : "");
    bool gateway = strcmp(role, "gateway-admin") == 0;
    if (gateway && model != NULL)
        return gw_master_reply_error("gateway-admin covers every model: leave --model out");
    if (!gateway && model == NULL)
        return gw_master_reply_error("%s is granted on a model (--model M)", role);
    if (add && !gateway && !gw_config_callable(m->cfg, model))
        return gw_master_reply_error("no model named \"%s\" in the running configuration", model);
    if (!add && strcmp(name, c->name) == 0)
        return gw_master_reply_error("you cannot revoke your own grants (user \"%s\")", name);
    if ((u = rec_get(m, GW_DB_USERS, name, a, &rc)) == NULL)
        return rc == GW_ENOENT ? gw_master_reply_error("no user \"%s\"", name)
                               : gw_master_reply_error("could not read user: %s", gw_strerror(rc));
    grants = user_grants(u);
    long found = -1;
    for (size_t i = 0; i < json_object_array_length(grants) && found < 0; i++) {
        struct json_object *g = json_object_array_get_idx(grants, i);
        if (strcmp(field(g, "role"), role) == 0 &&
            strcmp(field(g, "model"), model ? model : "") == 0)
            found = (long)i;
    }
    struct json_object *reply = NULL;
    if (add && found >= 0) {
        reply = gw_master_reply_ok(); /* granted already: nothing to change */
        goto out;
    }
    if (!add && found < 0) {
        reply = gw_master_reply_error("user \"%s\" has no grant %s%s%s", name, role,
                                      model ? " on " : "", model ? model : "");
        goto out;
    }
    if (!add && gateway && admins_count(m, a) <= 1) {
        reply = gw_master_reply_error(
            "\"%s\" is the last gateway admin: grant gateway-admin to another "
            "user first",
            name);
        goto out;
    }
    if (add) {
        struct json_object *g = json_object_new_object();
        json_object_object_add(g, "role", json_object_new_string(role));
        if (model != NULL)
            json_object_object_add(g, "model", json_object_new_string(model));
        json_object_array_add(grants, g);
    } else {
        json_object_array_del_idx(grants, (size_t)found, 1);
    }
    if ((rc = rec_put(m, GW_DB_USERS, name, u, false)) != 0) {
        reply = gw_master_reply_error("could not store user: %s", gw_strerror(rc));
        goto out;
    }
    keys_changed(m);
    gw_log(GW_LOG_INFO, "%s %s %s%s%s", add ? "granted" : "revoked", name, role,
           model ? " on " : "", model ? model : "");
    reply = gw_master_reply_ok();
out:
    json_object_put(u);
    return reply;
}

static struct json_object *
cmd_grant(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
          struct gw_arena *a)
{
    return grant_change(m, c, req, a, true);
}

static struct json_object *
cmd_revoke(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
           struct gw_arena *a)
{
    return grant_change(m, c, req, a, false);
}

/* ---------------------------------------------------------- key rotate */

static struct json_object *
cmd_key_rotate(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
               struct gw_arena *a)
{
    const char *id = gw_master_arg_string(req, "id");
    char newid[GW_KEY_ID_LEN + 1], secret[GW_KEY_SECRET_LEN];
    unsigned char hash[GW_KEY_HASH_LEN];
    int rc;

    (void)c;
    if (id == NULL)
        return gw_master_reply_error("which key? (give its id)");
    if (gw_key_generate(newid, secret) != 0)
        return gw_master_reply_error("could not generate a key: no randomness");
    gw_key_hash(m->secret, secret, strlen(secret), hash);
    rc = gw_store_key_rotate(m->store, id, hash, gw_arena_printf(a, "%.12s...", secret));
    if (rc != 0) {
        memset(secret, 0, sizeof(secret));
        return rc == GW_ENOENT
                   ? gw_master_reply_error("no key with id \"%s\"", id)
                   : gw_master_reply_error("could not rotate key %s: %s", id, gw_strerror(rc));
    }
    keys_changed(m);
    gw_log(GW_LOG_INFO, "key %s rotated", id);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "id", json_object_new_string(id));
    json_object_object_add(o, "secret", json_object_new_string(secret));
    memset(secret, 0, sizeof(secret));
    return o;
}

/* --------------------------------------------------------------- audit */

static struct json_object *
cmd_audit(struct gw_master *m, const struct gw_caller *c, struct json_object *req,
          struct gw_arena *a)
{
    struct json_object *v, *arr = json_object_new_array();
    int64_t limit = AUDIT_DEFAULT_LIMIT;
    char **recs;
    size_t n;
    int rc;

    (void)c;
    if (json_object_object_get_ex(req, "limit", &v))
        limit = json_object_get_int64(v);
    if (limit < 0)
        limit = 0;
    if ((rc = gw_store_rec_list(m->store, GW_DB_AUDIT, true, (size_t)limit, a, &recs, &n)) != 0) {
        json_object_put(arr);
        return gw_master_reply_error("could not read the audit log: %s", gw_strerror(rc));
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_tokener_parse(recs[i]);
        if (e != NULL)
            json_object_array_add(arr, e);
    }
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "entries", arr);
    return o;
}

/* --------------------------------------------------------- permissions */

/* A refusal: an error reply whose code says so (the HTTP admin API
 * answers it with 403). */
static struct json_object *deny(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct json_object *
deny(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct json_object *o = gw_master_reply_error("permission denied: %s", msg);
    json_object_object_add(o, "code", json_object_new_string("permission_denied"));
    return o;
}

/* Does user (a record, or NULL) hold a role on model with every bit of
 * caps?  gateway-admin holds everything on every model. */
static bool
holds(struct json_object *user, const char *model, unsigned caps)
{
    struct json_object *g;

    if (user == NULL || model == NULL)
        return false;
    g = user_grants(user);
    for (size_t i = 0; i < json_object_array_length(g); i++) {
        struct json_object *e = json_object_array_get_idx(g, i);
        const char *role = field(e, "role");
        if (strcmp(role, "gateway-admin") == 0)
            return true;
        if ((gw_role_caps(role) & caps) == caps && strcmp(field(e, "model"), model) == 0)
            return true;
    }
    return false;
}

/* Is key id c's?  0 yes; otherwise *refusal is the reply to send. */
static int
key_owned(struct gw_master *m, const struct gw_caller *c, const char *id, struct gw_arena *a,
          struct json_object **refusal)
{
    struct gw_key *k;
    int rc = gw_store_key_get(m->store, id, a, &k);

    if (rc == GW_ENOENT)
        *refusal = gw_master_reply_error("no key with id \"%s\"", id);
    else if (rc != 0)
        *refusal = gw_master_reply_error("could not read key %s: %s", id, gw_strerror(rc));
    else if (strcmp(k->owner, c->name) != 0)
        *refusal = deny("key %s is not one of user \"%s\"'s keys", id, c->name);
    return *refusal == NULL ? 0 : GW_EPERM;
}

struct permission;
typedef struct json_object *(*permission_check_fn)(struct gw_master *m, const struct gw_caller *c,
                                                   struct json_object *user, const char *cmd,
                                                   struct json_object *req, struct gw_arena *a);

/* key.create: for themselves only, with models they may call. */
static struct json_object *
check_key_create(struct gw_master *m, const struct gw_caller *c, struct json_object *user,
                 const char *cmd, struct json_object *req, struct gw_arena *a)
{
    const char *owner = gw_master_arg_string(req, "user");
    struct json_object *models;

    (void)m, (void)a;
    if (owner != NULL && strcmp(owner, c->name) != 0)
        return deny("user \"%s\" may create keys only for themselves (--user %s)", c->name,
                    c->name);
    if (json_object_object_get_ex(req, "models", &models) &&
        json_object_is_type(models, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(models); i++) {
            const char *model = json_object_get_string(json_object_array_get_idx(models, i));
            if (!holds(user, model, GW_CAP_CALL))
                return deny("user \"%s\" holds no role on model %s that allows calling it (%s "
                            "--models)",
                            c->name, model ? model : "", cmd);
        }
    }
    json_object_object_add(req, "user", json_object_new_string(c->name));
    return NULL;
}

/* grant and revoke: an endpoint-admin of M gives and takes roles on M,
 * never gateway-admin, to and from other users. */
static struct json_object *
check_grant(struct gw_master *m, const struct gw_caller *c, struct json_object *user,
            const char *cmd, struct json_object *req, struct gw_arena *a)
{
    const char *role = gw_master_arg_string(req, "role"),
               *model = gw_master_arg_string(req, "model"),
               *target = gw_master_arg_string(req, "user");

    (void)m, (void)a;
    if (role != NULL && strcmp(role, "gateway-admin") == 0)
        return deny("user \"%s\" is not a gateway admin and may not %s gateway-admin", c->name,
                    cmd);
    if (model == NULL)
        return deny("user \"%s\" may %s roles only on a model they are endpoint-admin of "
                    "(--model M)",
                    c->name, cmd);
    if (!holds(user, model, GW_CAP_MANAGE))
        return deny("user \"%s\" holds no role on model %s that allows %s", c->name, model, cmd);
    if (target != NULL && strcmp(target, c->name) == 0)
        return deny("user \"%s\" may not %s their own roles", c->name, cmd);
    return NULL;
}

/*
 * What a caller who is not a gateway admin may run, and on what; a
 * command that is not here is for gateway admins alone.
 *
 * A request names what it acts on with its scope arguments: "model",
 * "key", "user", "tenant", and the arguments named by own_key and self.
 * Every scope it names must be allowed: a model by a role on it with all
 * of model_cap (0: no role will do), a key by owning it (own_key: the
 * argument that names it), a user by being that user (self: the argument
 * that names one); a tenant never.  A request that names no scope is
 * allowed when unscoped is set, and gw_master_accounts_after narrows its
 * reply to what the caller may see.  check replaces these rules for a
 * command whose arguments mean something else.
 *
 * A new command that acts on a model only needs its line here: quota.*
 * (tenant, model, key or user) are allowed on a model for operators and
 * above (set, clear) and viewers and above (show).
 */
/* The usage commands: any filter may be asked for; what comes back is
 * narrowed to the caller's own keys and models (usage_scoped). */
static struct json_object *
check_narrowed(struct gw_master *m, const struct gw_caller *c, struct json_object *user,
               const char *cmd, struct json_object *req, struct gw_arena *a)
{
    (void)m, (void)c, (void)user, (void)cmd, (void)req, (void)a;
    return NULL;
}

static const struct permission {
    const char *cmd;
    unsigned model_cap;
    const char *own_key;
    const char *self;
    bool unscoped;
    permission_check_fn check;
} permissions[] = {
    {"status", 0, NULL, NULL, true, NULL},
    {"key.create", 0, NULL, NULL, true, check_key_create},
    {"key.list", 0, NULL, NULL, true, NULL},
    {"key.show", 0, "id", NULL, false, NULL},
    {"key.disable", 0, "id", NULL, false, NULL},
    {"key.enable", 0, "id", NULL, false, NULL},
    {"key.rotate", 0, "id", NULL, false, NULL},
    {"key.delete", 0, "id", NULL, false, NULL},
    {"user.show", 0, NULL, "name", false, NULL},
    {"grant", 0, NULL, NULL, false, check_grant},
    {"revoke", 0, NULL, NULL, false, check_grant},
    {"limit.set", GW_CAP_OPERATE, NULL, NULL, false, NULL},
    {"limit.clear", GW_CAP_OPERATE, NULL, NULL, false, NULL},
    {"limit.show", GW_CAP_VIEW, "key", NULL, true, NULL},
    {"quota.set", GW_CAP_OPERATE, NULL, NULL, false, NULL},
    {"quota.clear", GW_CAP_OPERATE, NULL, NULL, false, NULL},
    {"quota.show", GW_CAP_VIEW, "key", "user", false, NULL},
    /* Anyone mapped to a user: usage_scoped narrows the records to theirs. */
    {"usage", 0, NULL, NULL, true, check_narrowed},
    {"usage.stats", 0, NULL, NULL, true, check_narrowed},
    {"usage.detail", 0, NULL, NULL, true, check_narrowed},
    {"endpoint.test", GW_CAP_OPERATE, NULL, NULL, false, NULL},
    {"breaker.list", 0, NULL, NULL, true, NULL},
};

/* What the scopes of p allow, in words, for a refusal. */
static const char *
permission_scopes(const struct permission *p)
{
    return p->model_cap != 0 ? "on a model they hold a role on (--model M)"
           : p->own_key      ? "on their own keys"
           : p->self         ? "for themselves"
                             : "as a gateway admin";
}

/* NULL when c may run cmd as req asks, else the refusal. */
static struct json_object *
permit(struct gw_master *m, const struct gw_caller *c, const char *cmd, struct json_object *req,
       struct gw_arena *a)
{
    const struct permission *p = NULL;
    struct json_object *user, *v, *refusal = NULL;
    int rc;
    bool scoped = false;

    if (c->admin)
        return NULL;
    for (size_t i = 0; i < sizeof(permissions) / sizeof(permissions[0]) && p == NULL; i++)
        if (strcmp(cmd, permissions[i].cmd) == 0)
            p = &permissions[i];
    if (p == NULL)
        return deny("user \"%s\" is not a gateway admin and may not run %s", c->name, cmd);
    /* A user deleted a moment ago holds nothing. */
    user = rec_get(m, GW_DB_USERS, c->name, a, &rc);
    if (p->check != NULL) {
        refusal = p->check(m, c, user, cmd, req, a);
        goto out;
    }
    const char *const scopes[] = {"model", "key", "user", "tenant", p->own_key, p->self};
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]) && refusal == NULL; i++) {
        const char *arg = scopes[i], *value;
        if (arg == NULL || !json_object_object_get_ex(req, arg, &v))
            continue;
        if (!json_object_is_type(v, json_type_string)) {
            refusal = gw_master_reply_error("\"%s\" must be a string", arg);
            break;
        }
        value = json_object_get_string(v);
        scoped = true;
        if (strcmp(arg, "model") == 0) {
            if (p->model_cap == 0 || !holds(user, value, p->model_cap))
                refusal = deny("user \"%s\" holds no role on model %s that allows %s", c->name,
                               value, cmd);
        } else if (p->own_key != NULL && strcmp(arg, p->own_key) == 0) {
            key_owned(m, c, value, a, &refusal);
        } else if (p->self != NULL && strcmp(arg, p->self) == 0) {
            if (strcmp(value, c->name) != 0)
                refusal = deny("user \"%s\" may run %s only for themselves", c->name, cmd);
        } else {
            refusal = deny("user \"%s\" is not a gateway admin and may run %s only %s", c->name,
                           cmd, permission_scopes(p));
        }
    }
    if (refusal == NULL && !scoped && !p->unscoped)
        refusal = deny("user \"%s\" is not a gateway admin and may run %s only %s", c->name, cmd,
                       permission_scopes(p));
out:
    json_object_put(user);
    return refusal;
}

/* ------------------------------------------------------- acting for */

/* A role that may use the admin API: any but endpoint-user, which only
 * calls models. */
static bool
user_manages(struct json_object *user)
{
    struct json_object *g = user_grants(user);

    for (size_t i = 0; i < json_object_array_length(g); i++)
        if (gw_role_caps(field(json_object_array_get_idx(g, i), "role")) & ~GW_CAP_CALL)
            return true;
    return false;
}

struct json_object *
gw_master_accounts_act_as(struct gw_master *m, const struct gw_caller *peer,
                          struct json_object *req, struct gw_caller *out)
{
    const char *name = gw_master_arg_string(req, "as_user"),
               *key = gw_master_arg_string(req, "via_key");
    struct gw_arena *a = NULL;
    struct json_object *user = NULL, *v, *refusal = NULL;
    int rc;

    /* Workers run as the master's effective uid; root may be anyone. */
    if (peer->uid != 0 && peer->uid != geteuid())
        return deny("uid %ld may not act for another user (only aigwd's workers may)",
                    (long)peer->uid);
    if (!name_valid(name))
        return deny("\"as_user\" must name a user");
    if ((a = gw_arena_create(1024)) == NULL)
        return gw_master_reply_error("could not act for %s: out of memory", name);
    if ((user = rec_get(m, GW_DB_USERS, name, a, &rc)) == NULL) {
        refusal = rc == GW_ENOENT
                      ? deny("no user \"%s\" (the owner of key %s)", name, key ? key : "?")
                      : gw_master_reply_error("could not read user: %s", gw_strerror(rc));
        goto out;
    }
    if (!user_manages(user)) {
        refusal = deny("user \"%s\" holds no role that may use the admin API (endpoint-user only "
                       "calls models)",
                       name);
        goto out;
    }
    memset(out, 0, sizeof(*out));
    out->uid =
        json_object_object_get_ex(user, "uid", &v) ? (uid_t)json_object_get_int64(v) : (uid_t)-1;
    out->admin = user_is_admin(user);
    out->http = true;
    snprintf(out->name, sizeof(out->name), "%s", name);
    snprintf(out->key, sizeof(out->key), "%s", key ? key : "");
    json_object_object_del(req, "as_user");
    json_object_object_del(req, "via_key");
out:
    json_object_put(user);
    gw_arena_destroy(a);
    return refusal;
}

/* ------------------------------------------------------------ dispatch */

static const struct accounts_command {
    const char *name;
    struct json_object *(*run)(struct gw_master *m, const struct gw_caller *c,
                               struct json_object *req, struct gw_arena *a);
} accounts_commands[] = {
    {"tenant.add", cmd_tenant_add},
    {"tenant.list", cmd_tenant_list},
    {"tenant.show", cmd_tenant_show},
    {"tenant.delete", cmd_tenant_delete},
    {"user.add", cmd_user_add},
    {"user.list", cmd_user_list},
    {"user.show", cmd_user_show},
    {"user.delete", cmd_user_delete},
    {"grant", cmd_grant},
    {"revoke", cmd_revoke},
    {"key.rotate", cmd_key_rotate},
    {"audit", cmd_audit},
};

/* Changes that go into the audit log when they succeed. */
static const char *const audited_commands[] = {
    "tenant.add", "tenant.delete", "user.add",     "user.delete",     "grant",
    "revoke",     "key.create",    "key.disable",  "key.enable",      "key.delete",
    "key.rotate", "limit.set",     "limit.clear",  "quota.set",       "quota.clear",
    "reload",     "breaker.reset", "provider.add", "provider.delete", "cache.purge"};

static bool
in_list(const char *cmd, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(cmd, list[i]) == 0)
            return true;
    return false;
}

/*
 * The usage commands of a caller who is not a gateway admin: the records
 * of the keys they own and of the models they hold any grant on
 * (endpoint-viewer included), narrowed here, before anything is added
 * up, so that totals hold only what they may see.
 */
static struct json_object *
usage_scoped(struct gw_master *m, const struct gw_caller *c, const char *cmd,
             struct json_object *req, struct gw_arena *a)
{
    struct gw_stats_scope scope = {.user = c->name};
    struct gw_key **keys;
    size_t n;
    int rc;
    struct json_object *u = rec_get(m, GW_DB_USERS, c->name, a, &rc), *grants;

    if (u == NULL)
        return gw_master_reply_error("could not read user \"%s\": %s", c->name, gw_strerror(rc));
    grants = user_grants(u);
    scope.models = gw_arena_alloc(a, (json_object_array_length(grants) + 1) * sizeof(char *));
    for (size_t i = 0; i < json_object_array_length(grants); i++) {
        const char *model = field(json_object_array_get_idx(grants, i), "model");
        if (model[0] != '\0')
            scope.models[scope.nmodels++] = gw_arena_strdup(a, model);
    }
    json_object_put(u);
    if ((rc = gw_store_key_list(m->store, a, &keys, &n)) != 0)
        return gw_master_reply_error("could not list keys: %s", gw_strerror(rc));
    scope.keys = gw_arena_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i]->owner, c->name) == 0)
            scope.keys[scope.nkeys++] = keys[i]->id;
    if (strcmp(cmd, "usage.stats") == 0)
        return gw_master_stats_usage(m, req, a, &scope);
    if (strcmp(cmd, "usage.detail") == 0)
        return gw_master_stats_detail(m, req, a, &scope);
    return gw_master_stats_totals(m, req, a, &scope);
}

struct json_object *
gw_master_accounts_run(struct gw_master *m, const struct gw_caller *c, const char *cmd,
                       struct json_object *req, struct gw_arena *a, bool *handled)
{
    struct json_object *refusal;

    *handled = true;
    if ((refusal = permit(m, c, cmd, req, a)) != NULL)
        return refusal;
    for (size_t i = 0; i < sizeof(accounts_commands) / sizeof(accounts_commands[0]); i++)
        if (strcmp(cmd, accounts_commands[i].name) == 0)
            return accounts_commands[i].run(m, c, req, a);
    if (!c->admin && strncmp(cmd, "usage", 5) == 0)
        return usage_scoped(m, c, cmd, req, a);
    if (strcmp(cmd, "key.create") == 0) {
        /* The tenant of a key is its owner's, never the client's word. */
        const char *user = gw_master_arg_string(req, "user");
        json_object_object_del(req, "tenant");
        if (user != NULL) {
            int rc;
            struct json_object *u = rec_get(m, GW_DB_USERS, user, a, &rc);
            if (u == NULL)
                return rc == GW_ENOENT
                           ? gw_master_reply_error("no user \"%s\"", user)
                           : gw_master_reply_error("could not read user: %s", gw_strerror(rc));
            json_object_object_add(req, "tenant", json_object_new_string(field(u, "tenant")));
            json_object_put(u);
        }
    }
    *handled = false;
    return NULL;
}

static void
audit_record(struct gw_master *m, const struct gw_caller *c, const char *cmd,
             struct json_object *req, struct json_object *reply)
{
    struct json_object *e = json_object_new_object(), *args = json_object_new_object(), *key;

    json_object_object_foreach(req, k, v)
    {
        /* Requests carry no secrets; replies do (key create, rotate):
         * nothing of a reply goes in but the id of a new key. */
        if (strcmp(k, "cmd") != 0 && strcmp(k, "api_key") != 0)
            json_object_object_add(args, k, json_object_get(v));
    }
    if (strcmp(cmd, "key.create") == 0 && json_object_object_get_ex(reply, "key", &key))
        json_object_object_add(args, "id", json_object_new_string(field(key, "id")));
    json_object_object_add(e, "time", json_object_new_int64(time(NULL)));
    json_object_object_add(e, "uid",
                           c->uid == (uid_t)-1 ? NULL : json_object_new_int64((int64_t)c->uid));
    json_object_object_add(e, "user", json_object_new_string(c->name));
    if (c->http) {
        json_object_object_add(e, "via", json_object_new_string("http"));
        json_object_object_add(e, "key", json_object_new_string(c->key));
    }
    json_object_object_add(e, "command", json_object_new_string(cmd));
    json_object_object_add(e, "args", args);
    if (gw_store_audit_add(m->store, json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN)) !=
        0)
        gw_log(GW_LOG_ERROR, "audit: could not record %s by %s", cmd, c->name);
    json_object_put(e);
}

/*
 * The entries of list (an array in reply) that a caller who is not a
 * gateway admin may see: keys they own (key.list), overrides of models
 * they may view and of their keys (limit.show), targets of models they
 * may view (breaker.list).
 */
static void
narrow(struct gw_master *m, const struct gw_caller *c, const char *cmd, struct json_object *reply)
{
    static const struct {
        const char *cmd, *list;
    } lists[] = {{"key.list", "keys"}, {"limit.show", "limits"}, {"breaker.list", "targets"}};
    struct json_object *arr = NULL, *user;
    struct gw_arena *a;
    int rc;

    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]) && arr == NULL; i++)
        if (strcmp(cmd, lists[i].cmd) == 0 &&
            !json_object_object_get_ex(reply, lists[i].list, &arr))
            return;
    if (arr == NULL || !json_object_is_type(arr, json_type_array) ||
        (a = gw_arena_create(1024)) == NULL)
        return;
    user = rec_get(m, GW_DB_USERS, c->name, a, &rc);
    for (size_t i = json_object_array_length(arr); i > 0; i--) {
        struct json_object *e = json_object_array_get_idx(arr, i - 1), *refusal = NULL;
        const char *scope = field(e, "scope");
        bool keep;
        if (strcmp(cmd, "key.list") == 0)
            keep = strcmp(field(e, "owner"), c->name) == 0;
        else if (strcmp(cmd, "breaker.list") == 0)
            keep = holds(user, field(e, "model"), GW_CAP_VIEW);
        else if (strncmp(scope, "model:", 6) == 0)
            keep = holds(user, scope + 6, GW_CAP_VIEW);
        else
            keep = strncmp(scope, "key:", 4) == 0 && key_owned(m, c, scope + 4, a, &refusal) == 0;
        json_object_put(refusal);
        if (!keep)
            json_object_array_del_idx(arr, i - 1, 1);
    }
    json_object_put(user);
    gw_arena_destroy(a);
}

/* The "code" of an error reply that has none, from its message: what
 * the HTTP admin API turns into a status. */
static void
error_classify(struct json_object *reply)
{
    struct json_object *v;
    const char *msg, *code;

    if (json_object_object_get_ex(reply, "code", &v))
        return;
    msg = field(reply, "error");
    code = strncmp(msg, "permission denied", 17) == 0 ? "permission_denied"
           : strncmp(msg, "unknown command", 15) == 0 ? "unknown_command"
           : strncmp(msg, "no ", 3) == 0              ? "not_found"
           : strncmp(msg, "could not", 9) == 0        ? "internal"
                                                      : "invalid";
    json_object_object_add(reply, "code", json_object_new_string(code));
}

struct json_object *
gw_master_accounts_after(struct gw_master *m, const struct gw_caller *c, const char *cmd,
                         struct json_object *req, struct json_object *reply)
{
    struct json_object *ok;

    if (reply == NULL)
        return reply;
    if (!json_object_object_get_ex(reply, "ok", &ok) || !json_object_get_boolean(ok)) {
        error_classify(reply);
        return reply;
    }
    if (in_list(cmd, audited_commands, sizeof(audited_commands) / sizeof(audited_commands[0])))
        audit_record(m, c, cmd, req, reply);
    if (!c->admin)
        narrow(m, c, cmd, reply);
    return reply;
}
