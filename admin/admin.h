/*
 * admin.h - what the files of aigwctl share: aigwctl.c (the commands
 * that ask the master) and logs.c (aigwctl logs, which reads the capture
 * files itself).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>

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
