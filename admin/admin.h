/*
 * admin.h - what the files of aigwctl share: the call to the master and
 * the helpers every command uses to read arguments and print replies.
 * They live in admin/aigwctl.c; each command family may have a file of
 * its own (admin/providers.c, admin/models.c, admin/logs.c: aigwctl logs,
 * which reads the capture files itself).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>

#include <json-c/json.h>

#define GW_ADMIN_EXIT_REFUSED 1
#define GW_ADMIN_EXIT_USAGE 2

/* Send req (consumed) to the master, wait for the reply; returns the exit
 * status, and on success *reply owns the parsed reply.  A refusal has
 * been printed already. */
int gw_admin_call(struct json_object *req, struct json_object **reply);
/* A new request {"cmd": cmd}, owned by the caller. */
struct json_object *gw_admin_request(const char *cmd);
/* Print "aigwctl: " fmt (with arg) and the usage hint; returns
 * GW_ADMIN_EXIT_USAGE. */
int gw_admin_usage_error(const char *fmt, const char *arg);
/* The operand of a command that takes one and --json into *out; 0, or a
 * usage error naming cmd ("provider test") and, when it is missing, what
 * it should be. */
int gw_admin_one_operand(int argc, char **argv, const char *cmd, const char *missing,
                         const char **out);
/* --json given: print replies as JSON. */
void gw_admin_json_set(void);
bool gw_admin_json(void);
/* Wait up to s seconds for the reply of the next call. */
void gw_admin_timeout_set(long s);
/* Pretty JSON of o, or of its member field, on stdout. */
void gw_admin_print_json(struct json_object *o, const char *field);
/* The member name of o as text, "" when absent. */
const char *gw_admin_field(struct json_object *o, const char *name);
/* The widest value of field in the objects of arr, at least min. */
int gw_admin_column_width(struct json_object *arr, const char *field, int min);
/*
 * src as text for a terminal, into dst (size bytes, always ended): a
 * control character (C0, DEL, and C1 as UTF-8 writes it) becomes '?', a
 * line break or tab a space when one_line.  Text a client chose (a model
 * name, a prompt) reaches an administrator's terminal through aigwctl;
 * an escape sequence in it must not act there.  A character is copied
 * whole or not at all; returns true when src did not fit.
 */
bool gw_admin_term_text(char *dst, size_t size, const char *src, bool one_line);
/* "created" of o as an ISO 8601 UTC time. */
void gw_admin_time_format(struct json_object *o, char *out, size_t len);

/* The command families of their own files: argv after the family name. */
int gw_admin_provider(int argc, char **argv);
int gw_admin_model(int argc, char **argv);

/* What aigwctl logs shows: records of key and model (NULL: any) at or
 * after since (ISO 8601 text, compared with the records' time; NULL:
 * all), as JSON lines or one summary per record; follow: keep reading
 * new records until interrupted. */
struct gw_admin_logs_filter {
    const char *key;
    const char *model;
    const char *since;
    bool follow;
    bool json;
};

/*
 * Print the capture records of the files in dir (capture-*.jsonl, in
 * name order, which is time order) that pass f.  Returns 0, or 1 when dir
 * cannot be read (after saying why on stderr).
 */
int gw_admin_logs(const char *dir, const struct gw_admin_logs_filter *f);

/*
 * Parse --since: "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS][Z]" (UTC) or a
 * span back from now ("90s", "30m", "2h", "7d") into out, ISO 8601 text
 * "YYYY-MM-DDTHH:MM:SS" that sorts with the records' times.  0, or -1
 * when s is none of these.
 */
int gw_admin_logs_since(const char *s, char *out, size_t len);

#endif
