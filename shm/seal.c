/*
 * seal.c - AES-256-GCM sealing of secrets kept at rest (BYOK provider
 * credentials in LMDB), and the key they are sealed with.
 *
 * Each sealed value carries its own random 96-bit nonce; with random
 * nonces one key may seal about 2^32 values before a repeat becomes a
 * risk, far beyond the credentials a gateway keeps.  The associated data
 * names the record the value belongs to, so a value copied into another
 * record (another tenant's, say) fails to open instead of being used
 * there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "shm/shm.h"

/* A key file holds 32 raw bytes or 64 hex digits (and maybe a newline). */
#define SEAL_KEY_FILE_MAX 256

int
gw_seal_encrypt(const unsigned char key[GW_SEAL_KEY_LEN], const void *ad, size_t adlen,
                const void *in, size_t len, unsigned char *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char *nonce = out, *ct = out + GW_SEAL_NONCE_LEN, *tag = ct + len;
    int n, rc = GW_EIO;

    if (ctx == NULL || len > INT32_MAX || adlen > INT32_MAX)
        goto out;
    if (gw_random_bytes(nonce, GW_SEAL_NONCE_LEN) != 0)
        goto out;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GW_SEAL_NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
        (adlen > 0 && EVP_EncryptUpdate(ctx, NULL, &n, ad, (int)adlen) != 1) ||
        EVP_EncryptUpdate(ctx, ct, &n, in, (int)len) != 1 ||
        EVP_EncryptFinal_ex(ctx, ct + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GW_SEAL_TAG_LEN, tag) != 1) {
        gw_log(GW_LOG_ERROR, "AES-256-GCM encryption failed (OpenSSL)");
        goto out;
    }
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int
gw_seal_decrypt(const unsigned char key[GW_SEAL_KEY_LEN], const void *ad, size_t adlen,
                const unsigned char *in, size_t inlen, unsigned char *out, size_t *outlen)
{
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char tag[GW_SEAL_TAG_LEN];
    int n, m, rc = GW_EINVAL;

    *outlen = 0;
    if (inlen < GW_SEAL_OVERHEAD || inlen > INT32_MAX || adlen > INT32_MAX)
        return GW_EINVAL;
    size_t len = inlen - GW_SEAL_OVERHEAD;
    const unsigned char *nonce = in, *ct = in + GW_SEAL_NONCE_LEN;
    /* OpenSSL wants a writable tag buffer. */
    memcpy(tag, ct + len, GW_SEAL_TAG_LEN);
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
        return GW_ENOMEM;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GW_SEAL_NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
        (adlen > 0 && EVP_DecryptUpdate(ctx, NULL, &n, ad, (int)adlen) != 1) ||
        EVP_DecryptUpdate(ctx, out, &n, ct, (int)len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GW_SEAL_TAG_LEN, tag) != 1)
        goto out;
    /* The tag is checked here: until then out holds unauthenticated bytes. */
    if (EVP_DecryptFinal_ex(ctx, out + n, &m) != 1) {
        explicit_bzero(out, len);
        goto out;
    }
    *outlen = (size_t)(n + m);
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

static int
hex_digit(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* 32 raw bytes, or 64 hex digits with an optional line end. */
static int
key_parse(const unsigned char *data, size_t len, unsigned char key[GW_SEAL_KEY_LEN])
{
    if (len == GW_SEAL_KEY_LEN) {
        memcpy(key, data, GW_SEAL_KEY_LEN);
        return 0;
    }
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len != 2 * GW_SEAL_KEY_LEN)
        return GW_EINVAL;
    for (size_t i = 0; i < GW_SEAL_KEY_LEN; i++) {
        int hi = hex_digit(data[2 * i]), lo = hex_digit(data[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return GW_EINVAL;
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* Create path with 32 random bytes, mode 0600, without ever leaving a
 * short file under the name (write a temporary one, then link it). */
static int
key_create(const char *path)
{
    unsigned char fresh[GW_SEAL_KEY_LEN];
    char tmp[4200];
    int fd, rc = GW_EIO;

    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    if (gw_random_bytes(fresh, sizeof(fresh)) != 0)
        return GW_EIO;
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        gw_log(GW_LOG_ERROR, "open(%s): %s", tmp, strerror(errno));
        goto out;
    }
    if (gw_write_all(fd, fresh, sizeof(fresh)) != 0 || fsync(fd) != 0) {
        gw_log(GW_LOG_ERROR, "write(%s): %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (link(tmp, path) != 0 && errno != EEXIST) {
        gw_log(GW_LOG_ERROR, "link(%s, %s): %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    unlink(tmp);
    gw_log(GW_LOG_INFO, "created provider key %s", path);
    rc = 0;
out:
    explicit_bzero(fresh, sizeof(fresh));
    return rc;
}

/* Read the key at path; check_mode refuses a file others may read. */
static int
key_read(const char *path, bool check_mode, unsigned char key[GW_SEAL_KEY_LEN])
{
    unsigned char data[SEAL_KEY_FILE_MAX];
    struct stat st;
    ssize_t n;
    int fd, rc = GW_EIO;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        gw_log(GW_LOG_ERROR, "open(%s): %s", path, strerror(errno));
        return errno == ENOENT ? GW_ENOENT : GW_EIO;
    }
    if (fstat(fd, &st) != 0) {
        gw_log(GW_LOG_ERROR, "fstat(%s): %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        gw_log(GW_LOG_ERROR, "provider key %s is not a regular file", path);
        rc = GW_EINVAL;
        goto out;
    }
    if (check_mode && (st.st_mode & 077) != 0) {
        gw_log(GW_LOG_ERROR,
               "provider key %s is open to others (mode %04o); refusing it: chmod 600 %s", path,
               (unsigned)(st.st_mode & 07777), path);
        rc = GW_EPERM;
        goto out;
    }
    if ((n = read(fd, data, sizeof(data))) < 0) {
        gw_log(GW_LOG_ERROR, "read(%s): %s", path, strerror(errno));
        goto out;
    }
    if ((rc = key_parse(data, (size_t)n, key)) != 0)
        gw_log(GW_LOG_ERROR, "provider key %s must hold 32 bytes or 64 hex digits", path);
out:
    explicit_bzero(data, sizeof(data));
    close(fd);
    return rc;
}

int
gw_seal_key_load(const char *path, const char *state_dir, unsigned char key[GW_SEAL_KEY_LEN],
                 char *from, size_t fromlen)
{
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    char buf[4096];
    int rc;

    if (path == NULL && creds != NULL && creds[0] != '\0') {
        snprintf(buf, sizeof(buf), "%s/aigw-provider-key", creds);
        if (access(buf, F_OK) == 0) {
            /* systemd made it, readable by this service alone. */
            snprintf(from, fromlen, "%s", buf);
            return key_read(buf, false, key);
        }
    }
    if (path == NULL) {
        snprintf(buf, sizeof(buf), "%s/provider.key", state_dir);
        path = buf;
    }
    snprintf(from, fromlen, "%s", path);
    if (access(path, F_OK) != 0 && errno == ENOENT && (rc = key_create(path)) != 0)
        return rc;
    return key_read(path, true, key);
}
