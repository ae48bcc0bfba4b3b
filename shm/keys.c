/*
 * keys.c - API key secrets: generation, the server secret, and the keyed
 * hash under which a key is stored.
 *
 * A key is never stored, only HMAC-SHA-256(server secret, key).  A plain
 * hash would do against a stolen database alone; keying it with a secret
 * kept beside the database (mode 0600) means a copy of the LMDB file
 * without the secret file cannot even be used to test guesses.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "shm/shm.h"

int
gw_secret_load(const char *state_dir, bool create, unsigned char secret[GW_SECRET_LEN])
{
    char path[4096];
    int fd = -1, rc = GW_EIO;

    snprintf(path, sizeof(path), "%s/secret", state_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        unsigned char fresh[GW_SECRET_LEN];
        char tmp[4200];

        /* Write to a temporary name and rename, so a crash never leaves a
         * short secret that would silently invalidate every key. */
        snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
        if (gw_random_bytes(fresh, sizeof(fresh)) != 0)
            goto fail;
        int wfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (wfd < 0) {
            gw_log(GW_LOG_ERROR, "open(%s): %s", tmp, strerror(errno));
            goto fail;
        }
        if (gw_write_all(wfd, fresh, sizeof(fresh)) != 0 || fsync(wfd) != 0) {
            gw_log(GW_LOG_ERROR, "write(%s): %s", tmp, strerror(errno));
            close(wfd);
            unlink(tmp);
            goto fail;
        }
        close(wfd);
        if (link(tmp, path) != 0 && errno != EEXIST) {
            gw_log(GW_LOG_ERROR, "link(%s, %s): %s", tmp, path, strerror(errno));
            unlink(tmp);
            goto fail;
        }
        unlink(tmp);
        gw_log(GW_LOG_INFO, "created server secret %s", path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "open(%s): %s", path, strerror(errno));
        rc = errno == ENOENT ? GW_ENOENT : GW_EIO;
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0)
        gw_log(GW_LOG_WARN, "%s is readable by others (mode %04o); it should be 0600", path,
               (unsigned)(st.st_mode & 07777));
    ssize_t n = read(fd, secret, GW_SECRET_LEN);
    if (n != GW_SECRET_LEN) {
        gw_log(GW_LOG_ERROR, "read(%s): %s", path,
               n < 0 ? strerror(errno) : "file is shorter than 32 bytes");
        goto fail;
    }
    rc = 0;
fail:
    if (fd >= 0)
        close(fd);
    return rc;
}

/*
 * The MAC, keyed with the server secret, is set up once per process and
 * restarted for each key (EVP_MAC_init without a key keeps the one set):
 * fetching the algorithm, setting the key, or even copying the keyed
 * context (a dozen allocations) cost far more than hashing a 51-byte key.
 */
void
gw_key_hash(const unsigned char secret[GW_SECRET_LEN], const char *key, size_t len,
            unsigned char out[GW_KEY_HASH_LEN])
{
    static EVP_MAC_CTX *keyed;
    static unsigned char keyed_with[GW_SECRET_LEN];
    size_t outlen = GW_KEY_HASH_LEN;

    if (keyed == NULL || memcmp(keyed_with, secret, GW_SECRET_LEN) != 0) {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        EVP_MAC_CTX_free(keyed);
        keyed = mac ? EVP_MAC_CTX_new(mac) : NULL;
        EVP_MAC_free(mac);
        if (keyed == NULL || !EVP_MAC_init(keyed, secret, GW_SECRET_LEN, params))
            gw_fatal("HMAC-SHA-256 is not available from OpenSSL");
        memcpy(keyed_with, secret, GW_SECRET_LEN);
    }
    if (!EVP_MAC_init(keyed, NULL, 0, NULL) ||
        !EVP_MAC_update(keyed, (const unsigned char *)key, len) ||
        !EVP_MAC_final(keyed, out, &outlen, GW_KEY_HASH_LEN))
        gw_fatal("HMAC-SHA-256 failed");
}

int
gw_key_generate(char id[GW_KEY_ID_LEN + 1], char secret[GW_KEY_SECRET_LEN])
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char rnd[6 + 32];
    size_t plen = strlen(GW_KEY_PREFIX);

    if (gw_random_bytes(rnd, sizeof(rnd)) != 0)
        return GW_EIO;
    memcpy(id, "key_", 4);
    gw_hex_encode(rnd, 6, id + 4);

    /* 32 random bytes as 43 base64url characters (256 bits). */
    memcpy(secret, GW_KEY_PREFIX, plen);
    const unsigned char *r = rnd + 6;
    size_t o = plen;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < 32; i++) {
        acc = (acc << 8) | r[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            secret[o++] = b64url[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        secret[o++] = b64url[(acc << (6 - bits)) & 63];
    secret[o] = '\0';
    return 0;
}

const char *const gw_role_names[] = {"gateway-admin", "endpoint-admin",  "endpoint-operator",
                                     "endpoint-user", "endpoint-viewer", NULL};

/* In the order of gw_role_names. */
static const unsigned role_caps[] = {
    GW_CAP_ALL,
    GW_CAP_CALL | GW_CAP_VIEW | GW_CAP_OPERATE | GW_CAP_MANAGE,
    GW_CAP_CALL | GW_CAP_VIEW | GW_CAP_OPERATE,
    GW_CAP_CALL,
    GW_CAP_VIEW,
};

unsigned
gw_role_caps(const char *role)
{
    for (size_t i = 0; role != NULL && gw_role_names[i] != NULL; i++)
        if (strcmp(role, gw_role_names[i]) == 0)
            return role_caps[i];
    return 0;
}

bool
gw_role_calls(const char *role)
{
    return (gw_role_caps(role) & GW_CAP_CALL) != 0;
}

bool
gw_key_allows(const struct gw_key *key, const char *model)
{
    bool listed = key->nmodels == 0;

    for (size_t i = 0; i < key->nmodels && !listed; i++)
        listed = strcmp(key->models[i], model) == 0;
    if (!listed || key->owner == NULL || key->owner[0] == '\0' || key->owner_all)
        return listed;
    for (size_t i = 0; i < key->nowner_models; i++)
        if (strcmp(key->owner_models[i], model) == 0)
            return true;
    return false;
}
