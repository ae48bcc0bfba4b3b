/*
 * safety.c - the matching half of content-safety rules: how a rule
 * becomes a PCRE2 pattern, and the checks the PII detectors make of what
 * their pattern finds.
 *
 * The master compiles each rule once to check it (a bad regular
 * expression is a configuration error with its position); every worker
 * compiles the rules of a generation again for itself, with JIT, because
 * compiled code cannot live in the shared segment.  Both go through
 * gw_safety_compile, so what the master accepts is what workers run.
 *
 * Every pattern is compiled for hard partial matching too: the stream
 * filter (worker/safety.c) asks whether the end of the text it holds
 * could be the start of a match, and holds back only from there.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "shm/shm.h"

const char *const gw_safety_type_names[GW_SAFETY_NTYPES] = {"keywords", "regex", "pii"};
const char *const gw_safety_action_names[GW_SAFETY_NACTIONS] = {"block", "mask", "flag"};
const char *const gw_safety_detector_names[GW_DETECT_NDETECTORS] = {
    "email", "phone", "credit_card", "iban", "cn_id", "ipv4", "ipv6", "api_key", "bearer",
};

/*
 * The candidates of each detector.  They are ASCII patterns with explicit
 * boundaries (lookarounds rather than \b, so "x@y.com" inside a longer
 * token is not cut out of it); the check functions below then decide.
 * maxlen bounds the text one match can span.
 */
static const struct {
    const char *pattern;
    size_t maxlen;
} detectors[GW_DETECT_NDETECTORS] = {
    [GW_DETECT_EMAIL] = {"(?<![A-Za-z0-9._%+-])[A-Za-z0-9_%+-](?:[A-Za-z0-9._%+-]{0,62}"
                         "[A-Za-z0-9_%+-])?@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)"
                         "{1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])",
                         254},
    /* +international (8 to 15 digits), North American, Chinese mobile. */
    [GW_DETECT_PHONE] = {"(?<![0-9A-Za-z+])(?:\\+[1-9](?:[ .-]?\\(?[0-9]\\)?){7,14}"
                         "|\\(?[2-9][0-9]{2}\\)?[ .-][0-9]{3}[ .-][0-9]{4}"
                         "|1[3-9][0-9]{9})(?![0-9A-Za-z])",
                         48},
    [GW_DETECT_CREDIT_CARD] = {"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])", 37},
    [GW_DETECT_IBAN] = {"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}"
                        "|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![A-Za-z0-9])",
                        42},
    [GW_DETECT_CN_ID] = {"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
                         "(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])",
                         18},
    [GW_DETECT_IPV4] = {"(?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}"
                        "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![0-9]|\\.[0-9])",
                        15},
    [GW_DETECT_IPV6] = {"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                        "(?:[0-9]{1,3}(?:\\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
                        "(?![0-9A-Za-z:]|\\.[0-9])",
                        50},
    [GW_DETECT_API_KEY] = {"(?<![A-Za-z0-9_-])(?:sk-[A-Za-z0-9_-]{20,200}|AKIA[0-9A-Z]{16}"
                           "|gh[pousr]_[A-Za-z0-9]{36,200}|github_pat_[A-Za-z0-9_]{22,200}"
                           "|xox[abprs]-[A-Za-z0-9-]{10,200}|AIza[0-9A-Za-z_-]{35}"
                           "|glpat-[A-Za-z0-9_-]{20,64})(?![A-Za-z0-9_-])",
                           211},
    [GW_DETECT_BEARER] = {"(?<![A-Za-z0-9])(?i:bearer)[ \\t]+[A-Za-z0-9._~+/-]{16,512}={0,2}"
                          "(?![A-Za-z0-9._~+/=-])",
                          540},
};

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool
gw_safety_luhn_ok(const char *s, size_t len)
{
    int sum = 0, n = 0;

    for (size_t i = len; i-- > 0;) {
        if (s[i] == ' ' || s[i] == '-')
            continue;
        if (!is_digit(s[i]))
            return false;
        int d = s[i] - '0';
        if (n++ % 2 == 1 && (d *= 2) > 9)
            d -= 9;
        sum += d;
    }
    return n >= 13 && n <= 19 && sum % 10 == 0;
}

bool
gw_safety_iban_ok(const char *s, size_t len)
{
    char c[34];
    size_t n = 0;
    unsigned rem = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ')
            continue;
        if (n == sizeof(c))
            return false;
        char ch = s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 32) : s[i];
        if (!is_digit(ch) && (ch < 'A' || ch > 'Z'))
            return false;
        c[n++] = ch;
    }
    if (n < 15 || c[0] < 'A' || c[1] < 'A' || !is_digit(c[2]) || !is_digit(c[3]))
        return false;
    /* The first four characters go to the end; letters count 10 to 35. */
    for (size_t k = 0; k < n; k++) {
        char ch = c[(k + 4) % n];
        if (is_digit(ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

/* ISO 7064 MOD 11-2 over the first 17 digits gives the 18th. */
bool
gw_safety_cn_id_ok(const char *s, size_t len)
{
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[] = "10X98765432";
    int sum = 0;

    if (len != 18)
        return false;
    for (int i = 0; i < 17; i++) {
        if (!is_digit(s[i]))
            return false;
        sum += (s[i] - '0') * weights[i];
    }
    char last = s[17] == 'x' ? 'X' : s[17];
    return check[sum % 11] == last;
}

static bool
phone_ok(const char *s, size_t len)
{
    size_t digits = 0;

    for (size_t i = 0; i < len; i++)
        digits += is_digit(s[i]);
    return s[0] != '+' || (digits >= 8 && digits <= 15);
}

static bool
ipv6_ok(const char *s, size_t len)
{
    char buf[64];
    unsigned char addr[16];
    size_t hex = 0;

    if (len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        hex += s[i] != ':' && s[i] != '.';
    /* "::" alone is no address anyone would mind; "::1" is. */
    return hex > 0 && inet_pton(AF_INET6, buf, addr) == 1;
}

bool
gw_safety_detector_check(enum gw_safety_detector d, const char *s, size_t len)
{
    switch (d) {
    case GW_DETECT_PHONE: return phone_ok(s, len);
    case GW_DETECT_CREDIT_CARD: return gw_safety_luhn_ok(s, len);
    case GW_DETECT_IBAN: return gw_safety_iban_ok(s, len);
    case GW_DETECT_CN_ID: return gw_safety_cn_id_ok(s, len);
    case GW_DETECT_IPV6: return ipv6_ok(s, len);
    default: return true;
    }
}

static int
by_length_desc(const void *a, const void *b)
{
    size_t la = strlen(*(const char *const *)a), lb = strlen(*(const char *const *)b);

    return la < lb ? 1 : la > lb ? -1 : 0;
}

/*
 * (?:w1|w2|...) with every ASCII punctuation character escaped, longest
 * words first so that a mask covers "secret plan" rather than "secret";
 * whole words are bounded by lookarounds on letters, digits and '_'.
 */
static int
keywords_pattern(const struct gw_safety_spec *spec, struct gw_buf *b, size_t *maxlen)
{
    const char **sorted = malloc((spec->nwords ? spec->nwords : 1) * sizeof(*sorted));
    int rc = 0;

    if (sorted == NULL)
        return GW_ENOMEM;
    memcpy(sorted, spec->words, spec->nwords * sizeof(*sorted));
    qsort(sorted, spec->nwords, sizeof(*sorted), by_length_desc);
    *maxlen = spec->nwords > 0 ? strlen(sorted[0]) : 0;
    /* A caseless match may differ in bytes from the word (UTF-8). */
    *maxlen += *maxlen / 2 + 4;
    rc |= gw_buf_printf(b, "%s(?:", spec->whole_word ? "(?<![\\p{L}\\p{N}_])" : "");
    for (size_t i = 0; i < spec->nwords; i++) {
        if (i > 0)
            rc |= gw_buf_append(b, "|", 1);
        for (const char *c = sorted[i]; *c; c++) {
            unsigned char u = (unsigned char)*c;
            if (u < 0x80 && u > ' ' && !(u >= '0' && u <= '9') && !(u >= 'a' && u <= 'z') &&
                !(u >= 'A' && u <= 'Z'))
                rc |= gw_buf_append(b, "\\", 1);
            rc |= gw_buf_append(b, c, 1);
        }
    }
    rc |= gw_buf_printf(b, ")%s", spec->whole_word ? "(?![\\p{L}\\p{N}_])" : "");
    free(sorted);
    return rc != 0 ? GW_ENOMEM : 0;
}

void *
gw_safety_compile(const struct gw_safety_spec *spec, bool jit, size_t *maxlen, char *err,
                  size_t errlen, size_t *erroffset)
{
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    struct gw_buf b = {0};
    const char *pattern = NULL;
    pcre2_code *code = NULL;
    int errcode;
    PCRE2_SIZE off = 0;

    *erroffset = 0;
    *maxlen = 0;
    switch (spec->type) {
    case GW_SAFETY_KEYWORDS:
        opts |= PCRE2_CASELESS | PCRE2_UCP;
        if (keywords_pattern(spec, &b, maxlen) != 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        pattern = b.data;
        break;
    case GW_SAFETY_REGEX: pattern = spec->pattern; break;
    case GW_SAFETY_PII:
        if ((unsigned)spec->detector >= GW_DETECT_NDETECTORS) {
            snprintf(err, errlen, "unknown detector");
            goto out;
        }
        pattern = detectors[spec->detector].pattern;
        *maxlen = detectors[spec->detector].maxlen;
        break;
    default: snprintf(err, errlen, "unknown rule type"); goto out;
    }
    code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &errcode, &off, NULL);
    if (code == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        snprintf(err, errlen, "%s", (const char *)msg);
        *erroffset = off;
        goto out;
    }
    /* Without JIT (a platform without it) the interpreter does the same. */
    if (jit)
        (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
out:
    gw_buf_free(&b);
    return code;
}
