/*
 * byok.c - the stored form of a BYOK credential: a JSON record whose
 * secret is sealed (shm/seal.c), written by the master (master/providers.c)
 * and opened by workers (worker/byok.c) and by the master's provider test.
 *
 * The associated data binds the sealed secret to everything that decides
 * where it is sent: tenant, name, the provider it stands in for, its type
 * and base URL.  Whoever can write the LMDB file but lacks the key can
 * neither read a secret nor point it at another tenant or another URL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "shm/shm.h"

/* Secrets over this are not credentials (config api_key_file has 64 KiB). */
#define BYOK_SECRET_MAX (64 * 1024)

const char *const gw_byok_type_names[] = {"openai", "azure",   "anthropic",
                                          "gemini", "bedrock", NULL};

const char *
gw_byok_type_name(unsigned t)
{
    return t < sizeof(gw_byok_type_names) / sizeof(gw_byok_type_names[0]) - 1
               ? gw_byok_type_names[t]
               : NULL;
}

/* tenant NUL name NUL for NUL type NUL base_url, in a new heap buffer. */
static char *
byok_ad(const struct gw_byok *b, size_t *len)
{
    const char *parts[] = {"aigw-byok-v1", b->tenant, b->name,
                           b->provider,    b->type,   b->base_url ? b->base_url : ""};
    size_t n = 0;

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        n += strlen(parts[i]) + 1;
    char *ad = malloc(n), *p = ad;
    if (ad == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        size_t l = strlen(parts[i]) + 1;
        memcpy(p, parts[i], l);
        p += l;
    }
    *len = n;
    return ad;
}

char *
gw_byok_encode(const unsigned char key[GW_SEAL_KEY_LEN], struct gw_byok *b)
{
    size_t len = strlen(b->secret), adlen = 0;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned char *sealed = malloc(len + GW_SEAL_OVERHEAD);
    char *b64 = malloc(4 * ((len + GW_SEAL_OVERHEAD + 2) / 3) + 1), *ad = byok_ad(b, &adlen);
    char *out = NULL;

    if (sealed == NULL || b64 == NULL || ad == NULL || len > BYOK_SECRET_MAX)
        goto out;
    if (gw_seal_encrypt(key, ad, adlen, b->secret, len, sealed) != 0)
        goto out;
    EVP_EncodeBlock((unsigned char *)b64, sealed, (int)(len + GW_SEAL_OVERHEAD));
    if (EVP_Digest(b->secret, len, digest, &dlen, EVP_sha256(), NULL) != 1)
        goto out;
    gw_hex_encode(digest, dlen, hex);
    memcpy(b->fingerprint, "sha256:", 7);
    memcpy(b->fingerprint + 7, hex, 12);
    b->fingerprint[19] = '\0';

    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(b->name));
    json_object_object_add(o, "tenant", json_object_new_string(b->tenant));
    json_object_object_add(o, "type", json_object_new_string(b->type));
    json_object_object_add(o, "for", json_object_new_string(b->provider));
    if (b->base_url != NULL)
        json_object_object_add(o, "base_url", json_object_new_string(b->base_url));
    json_object_object_add(o, "created", json_object_new_int64(b->created));
    json_object_object_add(o, "fingerprint", json_object_new_string(b->fingerprint));
    json_object_object_add(o, "sealed", json_object_new_string(b64));
    out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
out:
    free(ad);
    free(b64);
    free(sealed);
    return out;
}

static char *
str_field(struct json_object *o, const char *name, struct gw_arena *a)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return gw_arena_strdup(a, json_object_get_string(v));
}

/* Open the base64 sealed secret s of b into b->secret. */
static int
byok_open(const unsigned char *key, const char *s, struct gw_byok *b)
{
    size_t slen = strlen(s), adlen = 0, outlen = 0;
    unsigned char *raw = malloc(slen / 4 * 3 + 3);
    char *ad = byok_ad(b, &adlen), *secret = NULL;
    int rc = GW_EINVAL;

    if (raw == NULL || ad == NULL || slen % 4 != 0 || slen == 0) {
        rc = raw == NULL || ad == NULL ? GW_ENOMEM : GW_EINVAL;
        goto out;
    }
    int n = EVP_DecodeBlock(raw, (const unsigned char *)s, (int)slen);
    if (n < 0)
        goto out;
    /* EVP_DecodeBlock counts the padding's zero bytes in. */
    for (size_t i = slen; i > 0 && s[i - 1] == '='; i--)
        n--;
    if (n < GW_SEAL_OVERHEAD || (secret = malloc((size_t)n - GW_SEAL_OVERHEAD + 1)) == NULL)
        goto out;
    if ((rc = gw_seal_decrypt(key, ad, adlen, raw, (size_t)n, (unsigned char *)secret, &outlen)) !=
        0) {
        free(secret);
        goto out;
    }
    secret[outlen] = '\0';
    b->secret = secret;
out:
    free(ad);
    free(raw);
    return rc;
}

int
gw_byok_decode(const unsigned char *key, const char *json, struct gw_arena *a, struct gw_byok *out)
{
    struct json_object *o = json_tokener_parse(json), *v;
    int rc = GW_EINVAL;

    memset(out, 0, sizeof(*out));
    if (o == NULL || !json_object_is_type(o, json_type_object))
        goto out;
    out->name = str_field(o, "name", a);
    out->tenant = str_field(o, "tenant", a);
    out->type = str_field(o, "type", a);
    out->provider = str_field(o, "for", a);
    out->base_url = str_field(o, "base_url", a);
    if (json_object_object_get_ex(o, "fingerprint", &v))
        snprintf(out->fingerprint, sizeof(out->fingerprint), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "created", &v))
        out->created = json_object_get_int64(v);
    if (out->name == NULL || out->tenant == NULL || out->type == NULL || out->provider == NULL)
        goto out;
    rc = 0;
    if (key != NULL) {
        const char *sealed =
            json_object_object_get_ex(o, "sealed", &v) ? json_object_get_string(v) : NULL;
        rc = sealed != NULL ? byok_open(key, sealed, out) : GW_EINVAL;
    }
out:
    json_object_put(o);
    return rc;
}

void
gw_byok_secret_free(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}
