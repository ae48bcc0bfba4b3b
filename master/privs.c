/*
 * privs.c - running as the configured user.
 *
 * Started as root (to bind a port below 1024, or to create /run/aigw),
 * the master does its root-only work, hands state_dir and the admin
 * socket to cfg->user, and drops to that user for good before it opens
 * the state store and forks workers, so that nothing serving clients
 * ever runs as root.  Under systemd the unit's User= does the same job
 * and these functions have nothing to do.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "master/master.h"

/* Who cfg->user and cfg->group name: the user's uid and the group's gid
 * (the user's primary group without cfg->group).  A name may also be a
 * number.  name gets the user's name, for initgroups. */
struct privs_who {
    uid_t uid;
    gid_t gid;
    char name[256];
    char group[256];
};

/* Parse a decimal id; false when s is not one. */
static bool
id_parse(const char *s, unsigned long *id)
{
    char *end;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    *id = strtoul(s, &end, 10);
    return errno == 0 && *end == '\0';
}

static int
privs_resolve(const struct gw_config *cfg, struct privs_who *who)
{
    struct passwd *pw;
    struct group *gr;
    unsigned long id;

    errno = 0;
    pw = getpwnam(cfg->user);
    if (pw == NULL && id_parse(cfg->user, &id)) {
        errno = 0;
        pw = getpwuid((uid_t)id);
    }
    if (pw == NULL) {
        if (errno != 0 && errno != ENOENT && errno != ESRCH) {
            gw_log(GW_LOG_ERROR, "getpwnam(%s): %s", cfg->user, strerror(errno));
            return GW_EIO;
        }
        gw_log(GW_LOG_ERROR, "user \"%s\": no such user", cfg->user);
        return GW_ENOENT;
    }
    who->uid = pw->pw_uid;
    who->gid = pw->pw_gid;
    snprintf(who->name, sizeof(who->name), "%s", pw->pw_name);
    snprintf(who->group, sizeof(who->group), "%ld", (long)pw->pw_gid);
    if (cfg->group == NULL) {
        if ((gr = getgrgid(who->gid)) != NULL)
            snprintf(who->group, sizeof(who->group), "%s", gr->gr_name);
        return 0;
    }
    errno = 0;
    gr = getgrnam(cfg->group);
    if (gr == NULL && id_parse(cfg->group, &id)) {
        errno = 0;
        gr = getgrgid((gid_t)id);
    }
    if (gr == NULL) {
        if (errno != 0 && errno != ENOENT && errno != ESRCH) {
            gw_log(GW_LOG_ERROR, "getgrnam(%s): %s", cfg->group, strerror(errno));
            return GW_EIO;
        }
        gw_log(GW_LOG_ERROR, "group \"%s\": no such group", cfg->group);
        return GW_ENOENT;
    }
    who->gid = gr->gr_gid;
    snprintf(who->group, sizeof(who->group), "%s", gr->gr_name);
    return 0;
}

/*
 * The plain files directly in the directory dfd.  Only files with one
 * link: a hard link planted in the directory must not hand its target
 * (say /etc/shadow) to the user.  Symlinks are left alone.
 */
static int
chown_entries(int dfd, const char *path, const struct privs_who *who)
{
    int fd2 = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = fd2 >= 0 ? fdopendir(fd2) : NULL;
    struct dirent *e;
    int rc = 0;

    if (d == NULL) {
        gw_log(GW_LOG_ERROR, "opendir(%s): %s", path, strerror(errno));
        if (fd2 >= 0)
            close(fd2);
        return GW_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
            st.st_nlink != 1 || (st.st_uid == who->uid && st.st_gid == who->gid))
            continue;
        if (fchownat(dfd, e->d_name, who->uid, who->gid, AT_SYMLINK_NOFOLLOW) != 0) {
            gw_log(GW_LOG_ERROR, "chown(%s/%s, %s:%s): %s", path, e->d_name, who->name, who->group,
                   strerror(errno));
            rc = GW_EIO;
        }
    }
    closedir(d);
    return rc;
}

int
gw_master_privs_chown(const struct gw_config *cfg, const char *path)
{
    struct privs_who who;
    struct stat st;
    int rc, dfd = -1;

    if (cfg->user == NULL || geteuid() != 0)
        return 0;
    if ((rc = privs_resolve(cfg, &who)) != 0)
        return rc;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0; /* nothing there to hand over */
        gw_log(GW_LOG_ERROR, "lstat(%s): %s", path, strerror(errno));
        return GW_EIO;
    }
    if (S_ISLNK(st.st_mode)) {
        gw_log(GW_LOG_ERROR, "%s is a symbolic link; not handing it to user %s", path, who.name);
        return GW_EPERM;
    }
    if ((st.st_uid != who.uid || st.st_gid != who.gid) &&
        fchownat(AT_FDCWD, path, who.uid, who.gid, AT_SYMLINK_NOFOLLOW) != 0) {
        gw_log(GW_LOG_ERROR, "chown(%s, %s:%s): %s", path, who.name, who.group, strerror(errno));
        return GW_EIO;
    }
    if (S_ISDIR(st.st_mode)) {
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) {
            gw_log(GW_LOG_ERROR, "open(%s): %s", path, strerror(errno));
            return GW_EIO;
        }
        rc = chown_entries(dfd, path, &who);
        close(dfd);
    }
    if (rc == 0)
        gw_log(GW_LOG_DEBUG, "%s is owned by %s:%s", path, who.name, who.group);
    return rc;
}

int
gw_master_privs_drop(const struct gw_config *cfg)
{
    struct privs_who who;
    int rc;

    if (cfg->user == NULL)
        return 0;
    if ((rc = privs_resolve(cfg, &who)) != 0)
        return rc;
    if (geteuid() != 0) {
        if (geteuid() != who.uid)
            gw_log(GW_LOG_WARN,
                   "user is %s, but aigwd runs as uid %ld and is not root, so "
                   "it cannot switch; going on as uid %ld",
                   cfg->user, (long)geteuid(), (long)geteuid());
        else if (getegid() != who.gid && cfg->group != NULL)
            gw_log(GW_LOG_WARN,
                   "group is %s, but aigwd runs as gid %ld and is not root, so "
                   "it cannot switch",
                   cfg->group, (long)getegid());
        return 0;
    }
    if (who.uid == 0) {
        gw_log(GW_LOG_WARN, "user %s is root: not dropping privileges", who.name);
        return 0;
    }
    if (initgroups(who.name, who.gid) != 0) {
        gw_log(GW_LOG_ERROR, "initgroups(%s, %ld): %s", who.name, (long)who.gid, strerror(errno));
        return GW_EIO;
    }
    if (setresgid(who.gid, who.gid, who.gid) != 0) {
        gw_log(GW_LOG_ERROR, "setresgid(%ld): %s", (long)who.gid, strerror(errno));
        return GW_EIO;
    }
    if (setresuid(who.uid, who.uid, who.uid) != 0) {
        gw_log(GW_LOG_ERROR, "setresuid(%ld): %s", (long)who.uid, strerror(errno));
        return GW_EIO;
    }
    /* Every id must be the user's now, and root out of reach for good. */
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 || ru != who.uid ||
        eu != who.uid || su != who.uid || rg != who.gid || eg != who.gid || sg != who.gid) {
        gw_log(GW_LOG_ERROR, "dropping privileges to %s left other ids in place", who.name);
        return GW_EPERM;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0) {
        gw_log(GW_LOG_ERROR, "could regain root after dropping privileges to %s", who.name);
        return GW_EPERM;
    }
    gw_log(GW_LOG_INFO, "dropped privileges to user %s (uid %ld, group %s, gid %ld)", who.name,
           (long)who.uid, who.group, (long)who.gid);
    return 0;
}
