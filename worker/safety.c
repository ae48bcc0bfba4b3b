/*
 * safety.c - content safety in the worker.
 *
 * The master checks the rules of safety: and lays them out in each
 * routing generation (shm/gen.c); a worker compiles them with PCRE2 and
 * JIT the first time a request of a new generation needs them, and keeps
 * that engine until the generation changes (compiled code cannot live in
 * shared memory).  A worker that never sees a rule compiles nothing.
 *
 * Input: every text of the request (message content, text parts, tool
 * call arguments, input and prompt) is matched; a block rule answers 400
 * content_blocked naming the rule, a mask rule replaces what it found
 * before the body goes upstream, a flag rule only counts and logs.
 *
 * Output: the answer's text (choices[].message.content, or the streamed
 * delta.content) is matched the same way.  A stream keeps, per choice,
 * the text it could not release yet: after each chunk every rule is run
 * with hard partial matching over what is held, and only the text before
 * the earliest place where a match could still begin is released, so a
 * phrase split over two chunks is found, and text that cannot begin a
 * match leaves at once.  No more than the window (the longest match a
 * rule can make, at most safety.stream_window) is ever held.
 *
 * Requests whose model has no rule, or that the allowlist names, cost one
 * test; a stream with no output rule is not touched at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "worker/safety.h"

#define SAFETY_CONTEXT 16     /* bytes kept before held text, for lookbehinds */
#define SAFETY_CHOICES 8      /* choices of a stream with a window of their own */
#define SAFETY_PLACEHOLDER 80 /* longest "[LABEL_n]" */

struct rule {
    char *name;
    char label[SAFETY_PLACEHOLDER - 16]; /* NAME upper-cased, for [NAME_1] */
    enum gw_safety_type type;
    enum gw_safety_action action;
    enum gw_safety_detector detector;
    unsigned on;
    bool restore;
    char *mask;
    int32_t stat[2];
    pcre2_code *code;
    size_t maxlen;     /* 0: unbounded */
    size_t lookbehind; /* characters a match may look at before its start */
};

struct gw_safety_engine {
    struct rule *rules;
    size_t n;
    size_t window;
    size_t context; /* bytes kept before held text: the longest lookbehind */
    pcre2_match_data *md;
    unsigned users; /* requests using it (a worker serves several at once) */
    bool retired;   /* destroy when the last user is done */
};

/* A masked value, for numbering and restore. */
struct masked {
    int rule;
    bool input; /* masked in the request: may be restored */
    unsigned number;
    char *value;
    size_t len;
};

/* One choice's held text: buf[0..base) is context already released;
 * next[i], where rule i goes on next (it has matched or passed every
 * start before). */
struct window {
    struct gw_buf buf;
    size_t base;
    size_t *next; /* one for each rule of the engine */
};

struct gw_safety_req {
    struct gw_safety_engine *e;
    uint64_t rules;
    uint64_t dir_rules[2]; /* rules per direction */
    uint64_t hit[2];
    struct gw_arena *a;
    const struct gw_shm *shm;
    const char *request_id;
    struct masked *vals;
    size_t nvals, capvals;
    unsigned *counts; /* per rule: values numbered so far */
    bool restore;     /* some input value may be restored */
    size_t window;    /* held back at most, for this request's output rules */
    /* Stream: the envelope of the last chunk, for the text released at
     * the end; which choices hold text. */
    char *id, *model;
    int64_t created;
    unsigned used; /* bit per window */
    /* A stream's buffers (heap, freed with the request's arena). */
    struct window windows[SAFETY_CHOICES];
    struct gw_buf out_events;
};

/* ------------------------------------------------------------- engine */

struct gw_safety_engine *
gw_worker_safety_engine_create(const struct gw_worker_safety_def *defs, size_t n, size_t window)
{
    struct gw_safety_engine *e = calloc(1, sizeof(*e));
    char err[256];
    size_t off;

    if (e == NULL || (e->rules = calloc(n ? n : 1, sizeof(*e->rules))) == NULL)
        goto fail;
    e->window = window;
    e->context = SAFETY_CONTEXT;
    for (size_t i = 0; i < n; i++) {
        const struct gw_worker_safety_def *d = &defs[i];
        struct rule *r = &e->rules[i];
        struct gw_safety_spec spec = {
            .type = d->type,
            .detector = d->detector,
            .whole_word = d->whole_word,
            .pattern = d->pattern,
            .words = d->words,
            .nwords = d->nwords,
        };
        r->code = gw_safety_compile(&spec, true, &r->maxlen, err, sizeof(err), &off);
        if (r->code == NULL) {
            gw_log(GW_LOG_ERROR, "safety rule \"%s\" does not compile: %s", d->name, err);
            e->n = i;
            goto fail;
        }
        uint32_t lb = 0;
        (void)pcre2_pattern_info(r->code, PCRE2_INFO_MAXLOOKBEHIND, &lb);
        r->lookbehind = lb;
        if (4 * (size_t)lb > e->context) /* characters of up to 4 bytes */
            e->context = 4 * (size_t)lb;
        e->n = i + 1;
        r->name = strdup(d->name);
        r->mask = d->mask != NULL ? strdup(d->mask) : NULL;
        if (r->name == NULL || (d->mask != NULL && r->mask == NULL))
            goto fail;
        size_t k = 0;
        for (const char *c = d->name; *c && k + 1 < sizeof(r->label); c++, k++)
            r->label[k] = (*c >= 'a' && *c <= 'z')                                 ? (char)(*c - 32)
                          : ((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')) ? *c
                                                                                   : '_';
        r->label[k] = '\0';
        r->type = d->type;
        r->action = d->action;
        r->detector = d->detector;
        r->on = d->on;
        r->restore = d->restore;
        r->stat[0] = d->stat[0];
        r->stat[1] = d->stat[1];
    }
    if ((e->md = pcre2_match_data_create(1, NULL)) == NULL)
        goto fail;
    return e;
fail:
    gw_worker_safety_engine_destroy(e);
    return NULL;
}

void
gw_worker_safety_engine_destroy(struct gw_safety_engine *e)
{
    if (e == NULL)
        return;
    if (e->users > 0) { /* the last request using it destroys it */
        e->retired = true;
        return;
    }
    for (size_t i = 0; i < e->n; i++) {
        pcre2_code_free(e->rules[i].code);
        free(e->rules[i].name);
        free(e->rules[i].mask);
    }
    pcre2_match_data_free(e->md);
    free(e->rules);
    free(e);
}

/* The engine of generation g, compiled when g is new to this process. */
static struct gw_safety_engine *
engine_get(const struct gw_gen *g)
{
    static struct gw_safety_engine *cached;
    static uint64_t cached_gen;
    struct gw_worker_safety_def defs[GW_SAFETY_MAX_RULES];
    const char **words[GW_SAFETY_MAX_RULES] = {0};
    size_t n = g->nsafety < GW_SAFETY_MAX_RULES ? g->nsafety : GW_SAFETY_MAX_RULES;

    if (cached != NULL && cached_gen == g->generation)
        return cached;
    gw_worker_safety_engine_destroy(cached);
    cached = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct gw_gen_safety_rule *gr = gw_gen_safety_rule(g, i);
        const char *p = gw_gen_str(g, gr->words);
        words[i] = calloc(gr->nwords ? gr->nwords : 1, sizeof(char *));
        if (words[i] == NULL)
            goto out;
        for (uint32_t k = 0; k < gr->nwords && p != NULL; k++, p += strlen(p) + 1)
            words[i][k] = p;
        defs[i] = (struct gw_worker_safety_def){
            .name = gw_gen_str(g, gr->name),
            .type = (enum gw_safety_type)gr->type,
            .action = (enum gw_safety_action)gr->action,
            .detector = (enum gw_safety_detector)gr->detector,
            .on = gr->on,
            .whole_word = gr->whole_word,
            .restore = gr->restore,
            .pattern = gw_gen_str(g, gr->pattern),
            .words = words[i],
            .nwords = gr->nwords,
            .mask = gw_gen_str(g, gr->mask),
            .stat = {gr->stat[0], gr->stat[1]},
        };
    }
    cached = gw_worker_safety_engine_create(defs, n, g->safety_window);
    cached_gen = g->generation;
out:
    for (size_t i = 0; i < n; i++)
        free(words[i]);
    return cached;
}

/* ------------------------------------------------------ request state */

/* The request is over (its arena is reset): its buffers and its hold on
 * the engine go. */
static void
req_release(void *arg)
{
    struct gw_safety_req *st = arg;

    for (size_t i = 0; i < SAFETY_CHOICES; i++)
        gw_buf_free(&st->windows[i].buf);
    gw_buf_free(&st->out_events);
    if (--st->e->users == 0 && st->e->retired)
        gw_worker_safety_engine_destroy(st->e);
}

struct gw_safety_req *
gw_worker_safety_req_create(struct gw_safety_engine *e, uint64_t rules, struct gw_arena *a,
                            const struct gw_shm *shm, const char *request_id)
{
    struct gw_safety_req *st = gw_arena_zalloc(a, sizeof(*st));

    st->e = e;
    st->a = a;
    st->shm = shm;
    st->request_id = request_id != NULL ? request_id : "-";
    st->counts = gw_arena_zalloc(a, (e->n ? e->n : 1) * sizeof(*st->counts));
    size_t *next = gw_arena_zalloc(a, SAFETY_CHOICES * (e->n ? e->n : 1) * sizeof(*next));
    for (size_t w = 0; w < SAFETY_CHOICES; w++)
        st->windows[w].next = next + w * e->n;
    st->window = 0;
    for (size_t i = 0; i < e->n && i < 64; i++) {
        if (!(rules & (UINT64_C(1) << i)))
            continue;
        const struct rule *r = &e->rules[i];
        if (r->on & GW_SAFETY_ON_INPUT)
            st->dir_rules[GW_SAFETY_INPUT] |= UINT64_C(1) << i;
        if (r->on & GW_SAFETY_ON_OUTPUT) {
            st->dir_rules[GW_SAFETY_OUTPUT] |= UINT64_C(1) << i;
            size_t want = r->maxlen == 0 || r->maxlen > e->window ? e->window : r->maxlen;
            if (want > st->window)
                st->window = want;
        }
    }
    st->rules = rules;
    e->users++;
    gw_arena_on_reset(a, req_release, st);
    return st;
}

bool
gw_worker_safety_req_wants(const struct gw_safety_req *st, enum gw_safety_dir dir)
{
    return st->dir_rules[dir] != 0 || (dir == GW_SAFETY_OUTPUT && st->restore);
}

const char *
gw_worker_safety_rule_name(const struct gw_safety_req *st, int i)
{
    return i >= 0 && (size_t)i < st->e->n ? st->e->rules[i].name : "?";
}

void
gw_worker_safety_verdicts(const struct gw_request *req, struct gw_buf *b)
{
    const struct gw_safety_req *st = req->safety;
    bool first = true;

    gw_buf_append(b, "[", 1);
    if (req->moderation_action != NULL) {
        gw_buf_printf(b,
                      "{\"rule\":\"moderation\",\"direction\":\"input\",\"action\":\"%s\","
                      "\"categories\":%s}",
                      req->moderation_action, req->moderation_categories);
        first = false;
    }
    for (int dir = 0; st != NULL && dir < 2; dir++) {
        for (size_t i = 0; i < st->e->n; i++) {
            if (!(st->hit[dir] & (UINT64_C(1) << i)))
                continue;
            gw_buf_printf(b, "%s{\"rule\":", first ? "" : ",");
            gw_worker_json_str(b, st->e->rules[i].name, strlen(st->e->rules[i].name));
            gw_buf_printf(b, ",\"direction\":\"%s\",\"action\":\"%s\"}",
                          dir == GW_SAFETY_INPUT ? "input" : "output",
                          gw_safety_action_names[st->e->rules[i].action]);
            first = false;
        }
    }
    gw_buf_append(b, "]", 1);
}

/* A rule matched: count it and log it, once per request and direction. */
static void
hit(struct gw_safety_req *st, int i, enum gw_safety_dir dir)
{
    const struct rule *r = &st->e->rules[i];

    if (st->hit[dir] & (UINT64_C(1) << i))
        return;
    st->hit[dir] |= UINT64_C(1) << i;
    if (st->shm != NULL && r->stat[dir] >= 0 && (uint64_t)r->stat[dir] < st->shm->hdr->nstats)
        atomic_fetch_add(&gw_shm_stat_at(st->shm, (size_t)r->stat[dir])->requests, 1);
    gw_log(GW_LOG_INFO, "req=%s safety rule \"%s\" matched the %s (%s)", st->request_id, r->name,
           dir == GW_SAFETY_INPUT ? "input" : "output", gw_safety_action_names[r->action]);
}

/* The text that replaces a match of rule i: its mask, or [LABEL_n], the
 * same n for the same value within the request. */
static const char *
placeholder(struct gw_safety_req *st, int i, enum gw_safety_dir dir, const char *s, size_t len,
            size_t *plen)
{
    const struct rule *r = &st->e->rules[i];
    unsigned number = 0;

    if (r->mask != NULL) {
        *plen = strlen(r->mask);
        return r->mask;
    }
    for (size_t k = 0; k < st->nvals && number == 0; k++)
        if (st->vals[k].rule == i && st->vals[k].len == len &&
            memcmp(st->vals[k].value, s, len) == 0)
            number = st->vals[k].number;
    if (number == 0) {
        if (st->nvals == st->capvals) {
            size_t cap = st->capvals ? st->capvals * 2 : 8;
            struct masked *v = gw_arena_alloc(st->a, cap * sizeof(*v));
            if (st->nvals > 0)
                memcpy(v, st->vals, st->nvals * sizeof(*v));
            st->vals = v;
            st->capvals = cap;
        }
        number = ++st->counts[i];
        st->vals[st->nvals++] = (struct masked){.rule = i,
                                                .input = dir == GW_SAFETY_INPUT,
                                                .number = number,
                                                .value = gw_arena_strndup(st->a, s, len),
                                                .len = len};
        st->restore |= r->restore && dir == GW_SAFETY_INPUT;
    }
    char *p = gw_arena_printf(st->a, "[%s_%u]", r->label, number);
    *plen = strlen(p);
    return p;
}

static size_t
next_char(const char *s, size_t len, size_t i)
{
    for (i++; i < len && ((unsigned char)s[i] & 0xC0) == 0x80; i++)
        ;
    return i;
}

/* The offset n characters before pos in s (0 at the most). */
static size_t
chars_back(const char *s, size_t pos, size_t n)
{
    while (pos > 0 && n > 0) {
        pos--;
        if (((unsigned char)s[pos] & 0xC0) != 0x80)
            n--;
    }
    return pos;
}

/* b->data[s..e) became plen bytes: move the offsets at or past e with
 * the text after it, and those inside it to its start. */
static void
offsets_move(size_t *v, size_t n, size_t s, size_t e, size_t plen)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i] >= e)
            v[i] = v[i] - (e - s) + plen;
        else if (v[i] > s)
            v[i] = s;
    }
}

/*
 * Run the direction's rules over b->data[from..len), in order, as over a
 * whole text, when that text may still go on (unless final).  Masks are
 * applied in b; the bytes before from are context only.  next (NULL for
 * a whole text: all from from) holds where each rule goes on, and is
 * left where each rule must go on next time: it has matched or passed
 * every start before, and is never asked again about one, since the
 * text around it may have changed since (a later rule's mask).  *hold,
 * the smallest of them: text before it is final.
 *
 * Over a whole text a rule sees what the rules before it masked, and not
 * what the rules after it mask.  So, unless final, rule i reads only up
 * to where an earlier rule stopped (a match of that rule could still
 * begin there, and its mask change what rule i finds), and masks nothing
 * within the lookbehind of where an earlier rule goes on: such a match
 * waits, and with it the text from its start.
 * Returns -1, or the block rule that matched.
 */
static int
scan_buf(struct gw_safety_req *st, enum gw_safety_dir dir, struct gw_buf *b, size_t from,
         size_t *next, bool final, size_t *hold)
{
    struct gw_safety_engine *e = st->e;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    size_t guard = b->len; /* where the earlier rules' lookbehind begins */

    *hold = b->len; /* also where the rules before this one stopped */
    for (size_t i = 0; i < e->n; i++) {
        if (!(st->dir_rules[dir] & (UINT64_C(1) << i)))
            continue;
        const struct rule *r = &e->rules[i];
        size_t off = next != NULL && next[i] > from ? next[i] : from;
        size_t lim = final ? b->len : gw_utf8_whole(b->data, *hold);
        size_t stop; /* where this rule goes on next */
        for (;;) {
            if (off > lim) {
                stop = off;
                break;
            }
            int rc = pcre2_match(r->code, (PCRE2_SPTR)(b->data ? b->data : ""), lim, off,
                                 final ? 0 : PCRE2_PARTIAL_HARD, e->md, NULL);
            if (rc == PCRE2_ERROR_PARTIAL) {
                stop = ov[0];
                break;
            }
            if (rc < 0) {
                stop = lim; /* (moved with the masks) */
                break;
            }
            size_t s = ov[0], end = ov[1];
            if (end == s || (r->type == GW_SAFETY_PII &&
                             !gw_safety_detector_check(r->detector, b->data + s, end - s))) {
                off = next_char(b->data, b->len, s);
                continue;
            }
            if (!final && end > guard && r->action == GW_SAFETY_MASK) {
                stop = s; /* its mask would change what an earlier rule looks back at */
                break;
            }
            hit(st, (int)i, dir);
            if (r->action == GW_SAFETY_BLOCK)
                return (int)i;
            if (r->action == GW_SAFETY_FLAG) {
                off = end;
                continue;
            }
            size_t plen;
            const char *p = placeholder(st, (int)i, dir, b->data + s, end - s, &plen);
            if (plen > end - s && gw_buf_reserve(b, plen - (end - s)) != 0)
                return -1;
            memmove(b->data + s + plen, b->data + end, b->len - end);
            memcpy(b->data + s, p, plen);
            b->len = b->len - (end - s) + plen;
            size_t mine[] = {*hold, guard, lim};
            offsets_move(mine, 3, s, end, plen);
            *hold = mine[0], guard = mine[1], lim = mine[2];
            if (next != NULL)
                offsets_move(next, e->n, s, end, plen);
            off = s + plen;
        }
        if (next != NULL)
            next[i] = stop;
        if (stop < *hold)
            *hold = stop;
        if (chars_back(b->data, stop, r->lookbehind) < guard)
            guard = chars_back(b->data, stop, r->lookbehind);
    }
    return -1;
}

/* Put back the input values masked by rules with restore into t (a new
 * buffer in the arena, or t itself when it holds no placeholder). */
static const char *
restore_text(struct gw_safety_req *st, const char *t, size_t len, size_t *out_len)
{
    struct gw_buf b = {0};
    const char *res = t;
    size_t run = 0;

    *out_len = len;
    if (!st->restore || memchr(t, '[', len) == NULL)
        return t;
    for (size_t i = 0; i < len; i++) {
        if (t[i] != '[')
            continue;
        const char *close =
            memchr(t + i, ']', len - i < SAFETY_PLACEHOLDER ? len - i : SAFETY_PLACEHOLDER);
        if (close == NULL)
            continue;
        for (size_t k = 0; k < st->nvals; k++) {
            const struct masked *v = &st->vals[k];
            const struct rule *r = &st->e->rules[v->rule];
            char ph[SAFETY_PLACEHOLDER];
            int n = snprintf(ph, sizeof(ph), "[%s_%u]", r->label, v->number);
            if (!r->restore || !v->input || n != close + 1 - (t + i) ||
                memcmp(ph, t + i, (size_t)n) != 0)
                continue;
            gw_buf_append(&b, t + run, i - run);
            gw_buf_append(&b, v->value, v->len);
            run = i + (size_t)n;
            i = run - 1;
            break;
        }
    }
    if (run > 0) {
        gw_buf_append(&b, t + run, len - run);
        if (b.data != NULL) {
            res = gw_arena_strndup(st->a, b.data, b.len);
            *out_len = b.len;
        }
    }
    gw_buf_free(&b);
    return res;
}

int
gw_worker_safety_scan(struct gw_safety_req *st, enum gw_safety_dir dir, const char *text,
                      size_t len, const char **out, size_t *out_len)
{
    struct gw_buf b = {0};
    size_t hold;
    int blocked;

    *out = text;
    *out_len = len;
    if (st->dir_rules[dir] == 0)
        goto restore;
    if (gw_buf_append(&b, text, len) != 0)
        return -1;
    blocked = scan_buf(st, dir, &b, 0, NULL, true, &hold);
    if (blocked >= 0) {
        gw_buf_free(&b);
        return blocked;
    }
    if (b.len != len || memcmp(b.data, text, len) != 0) {
        *out = gw_arena_strndup(st->a, b.data, b.len);
        *out_len = b.len;
    }
    gw_buf_free(&b);
restore:
    if (dir == GW_SAFETY_OUTPUT)
        *out = restore_text(st, *out, *out_len, out_len);
    return -1;
}

/* --------------------------------------------------------------- input */

/* Inspect (and mask) one JSON string in place; -1 or the block rule. */
static int
inspect_string(struct gw_safety_req *st, struct json_object *s, bool *changed)
{
    const char *out;
    size_t out_len;
    int blocked;

    if (s == NULL || !json_object_is_type(s, json_type_string))
        return -1;
    const char *t = json_object_get_string(s);
    size_t len = (size_t)json_object_get_string_len(s);
    blocked = gw_worker_safety_scan(st, GW_SAFETY_INPUT, t, len, &out, &out_len);
    if (blocked < 0 && out != t) {
        json_object_set_string_len(s, out, (int)out_len);
        *changed = true;
    }
    return blocked;
}

static int inspect_message(struct gw_safety_req *st, struct json_object *msg, bool *changed);

/* A string, or an array of strings (input, prompt) or of the Responses
 * API's message items; token arrays are not text. */
static int
inspect_strings(struct gw_safety_req *st, struct json_object *v, bool *changed)
{
    int blocked = -1;

    if (v != NULL && json_object_is_type(v, json_type_array))
        for (size_t i = 0; i < gw_worker_json_len(v) && blocked < 0; i++) {
            struct json_object *item = gw_worker_json_at(v, i);
            blocked = json_object_is_type(item, json_type_object)
                          ? inspect_message(st, item, changed)
                          : inspect_string(st, item, changed);
        }
    else
        blocked = inspect_string(st, v, changed);
    return blocked;
}

static struct json_object *
get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;

    if (o == NULL || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* Every text of a chat message: content (string or text parts), tool calls. */
static int
inspect_message(struct gw_safety_req *st, struct json_object *msg, bool *changed)
{
    struct json_object *content = get(msg, "content"), *calls = get(msg, "tool_calls");
    int blocked = -1;

    if (content != NULL && json_object_is_type(content, json_type_array)) {
        for (size_t i = 0; i < gw_worker_json_len(content) && blocked < 0; i++)
            blocked = inspect_string(st, get(gw_worker_json_at(content, i), "text"), changed);
    } else {
        blocked = inspect_string(st, content, changed);
    }
    if (calls != NULL && json_object_is_type(calls, json_type_array))
        for (size_t i = 0; i < gw_worker_json_len(calls) && blocked < 0; i++)
            blocked = inspect_string(
                st, get(get(gw_worker_json_at(calls, i), "function"), "arguments"), changed);
    return blocked;
}

static bool
allowed(const struct gw_gen *g, const struct gw_request *req, const struct gw_key *key)
{
    return (key != NULL && gw_gen_list_has(g, g->allow_keys, g->nallow_keys, key->id)) ||
           (req->tenant != NULL &&
            gw_gen_list_has(g, g->allow_tenants, g->nallow_tenants, req->tenant)) ||
           (req->model != NULL &&
            gw_gen_list_has(g, g->allow_models, g->nallow_models, req->model));
}

int
gw_worker_safety_input(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                       struct gw_call *call, bool *answered)
{
    const struct gw_gen *g = w->gen;
    struct json_object *messages, *json = NULL;
    struct gw_safety_engine *e;
    struct gw_safety_req *st;
    bool changed = false;
    int blocked = -1;

    *answered = false;
    call->safety = NULL;
    bool moderate = g->moderation_model != 0 && call->model->moderation;
    if ((g->nsafety == 0 || call->model->safety_rules == 0) && !moderate)
        return 0;
    if (allowed(g, req, key))
        return 0;
    if (g->nsafety == 0 || call->model->safety_rules == 0)
        return gw_worker_moderation(w, req, call, answered);
    if ((e = engine_get(g)) == NULL) {
        *answered = true;
        return gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                                    "The gateway could not prepare its content safety rules "
                                    "(request %s).",
                                    req->id);
    }
    st =
        gw_worker_safety_req_create(e, call->model->safety_rules, req->arena, w->env->shm, req->id);
    req->safety = st; /* its verdicts go into the capture record */
    if (st->dir_rules[GW_SAFETY_INPUT] != 0) {
        json = gw_worker_call_json(call);
        messages = get(json, "messages");
        if (messages != NULL && json_object_is_type(messages, json_type_array))
            for (size_t i = 0; i < gw_worker_json_len(messages) && blocked < 0; i++)
                blocked = inspect_message(st, gw_worker_json_at(messages, i), &changed);
        if (blocked < 0)
            blocked = inspect_strings(st, get(json, "input"), &changed);
        if (blocked < 0)
            blocked = inspect_strings(st, get(json, "prompt"), &changed);
        if (blocked < 0)
            blocked = inspect_string(st, get(json, "instructions"), &changed);
    }
    if (blocked >= 0) {
        *answered = true;
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "content_blocked",
                                    NULL,
                                    "The request was blocked by the content safety rule \"%s\".",
                                    gw_worker_safety_rule_name(st, blocked));
    }
    if (changed) {
        /* The provider adapter splices the model into req->body: give it
         * the masked text. */
        size_t len;
        const char *s = json_object_to_json_string_length(
            json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        req->body = gw_arena_strndup(req->arena, s, len);
        req->body_len = len;
    }
    if (gw_worker_safety_req_wants(st, GW_SAFETY_OUTPUT)) {
        /* Only chat streams are read chunk by chunk; another stream of a
         * model with output rules would pass uninspected: refused. */
        if (call->stream && call->endpoint != GW_EP_CHAT) {
            *answered = true;
            return gw_worker_http_error(
                &w->conn, req, 400, "invalid_request_error", "stream_not_inspected", "stream",
                "This model's answers are inspected by content safety rules, which read only "
                "chat completion streams: ask for this answer without stream.");
        }
        call->safety = st;
    }
    /* The moderation model sees the input as the provider will: masked. */
    return moderate ? gw_worker_moderation(w, req, call, answered) : 0;
}

/* -------------------------------------------------------------- output */

static int
blocked_answer(struct gw_call *call, int rule)
{
    return gw_worker_http_error(call->conn, call->req, 400, "invalid_request_error",
                                "content_blocked", NULL,
                                "The response was blocked by the content safety rule \"%s\".",
                                gw_worker_safety_rule_name(call->safety, rule));
}

/* Scan one string of an answer; a masked or restored text replaces it. */
static int
output_string(struct gw_safety_req *st, struct json_object *c, bool *changed)
{
    const char *out;
    size_t out_len;
    int blocked;

    if (c == NULL || !json_object_is_type(c, json_type_string))
        return -1;
    const char *t = json_object_get_string(c);
    blocked = gw_worker_safety_scan(st, GW_SAFETY_OUTPUT, t, (size_t)json_object_get_string_len(c),
                                    &out, &out_len);
    if (blocked < 0 && out != t) {
        json_object_set_string_len(c, out, (int)out_len);
        *changed = true;
    }
    return blocked;
}

int
gw_worker_safety_response(struct gw_call *call, const char **body, size_t *len, bool *answered)
{
    struct gw_safety_req *st = call->safety;
    struct json_tokener *tok;
    struct json_object *o, *choices;
    bool changed = false;
    int blocked = -1, rc = 0;

    *answered = false;
    if (st == NULL || (tok = json_tokener_new()) == NULL)
        return 0;
    o = json_tokener_parse_ex(tok, *body, (int)*len);
    json_tokener_free(tok);
    /* Chat: choices[].message.content; completions: choices[].text. */
    choices = get(o, "choices");
    for (size_t i = 0; i < gw_worker_json_len(choices) && blocked < 0; i++) {
        struct json_object *choice = gw_worker_json_at(choices, i);
        blocked = output_string(st, get(get(choice, "message"), "content"), &changed);
        if (blocked < 0)
            blocked = output_string(st, get(choice, "text"), &changed);
    }
    /* The Responses API: output[].content[].text. */
    struct json_object *items = get(o, "output");
    for (size_t i = 0; i < gw_worker_json_len(items) && blocked < 0; i++) {
        struct json_object *parts = get(gw_worker_json_at(items, i), "content");
        for (size_t j = 0; j < gw_worker_json_len(parts) && blocked < 0; j++)
            blocked = output_string(st, get(gw_worker_json_at(parts, j), "text"), &changed);
    }
    if (blocked >= 0) {
        *answered = true;
        rc = blocked_answer(call, blocked);
    } else if (changed) {
        const char *s = json_object_to_json_string_length(
            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
        *body = gw_arena_strndup(call->req->arena, s, *len);
    }
    json_object_put(o);
    return rc;
}

/* -------------------------------------------------------------- stream */

static int
put_event(struct gw_safety_req *st, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

    if (gw_buf_append(&st->out_events, "data: ", 6) != 0 ||
        gw_buf_append(&st->out_events, s, len) != 0 ||
        gw_buf_append(&st->out_events, "\n\n", 2) != 0)
        return GW_ENOMEM;
    return 0;
}

/*
 * Match what choice i holds after new text came; release what no match
 * can still begin in (all of it when final), and return it (arena) in
 * *text.  -1, or the block rule.
 */
static int
window_step(struct gw_safety_req *st, struct window *wd, bool final, const char **text, size_t *len)
{
    struct gw_buf *b = &wd->buf;
    size_t hold, rel;
    int blocked = scan_buf(st, GW_SAFETY_OUTPUT, b, wd->base, wd->next, final, &hold);

    if (blocked >= 0)
        return blocked;
    rel = final ? b->len : hold;
    if (!final && b->len - rel > st->window && b->len - wd->base > st->window)
        rel = b->len - st->window; /* a match longer than the window is not waited for */
    /* A character cut short at the end waits for its other bytes. */
    if (!final && rel > gw_utf8_whole(b->data, b->len))
        rel = gw_utf8_whole(b->data, b->len);
    if (rel < wd->base)
        rel = wd->base;
    /* A placeholder to restore leaves whole. */
    if (!final && st->restore) {
        for (size_t k = rel; k > wd->base && rel - k < SAFETY_PLACEHOLDER; k--) {
            if (b->data[k - 1] == ']')
                break;
            if (b->data[k - 1] == '[') {
                rel = k - 1;
                break;
            }
        }
    }
    while (!final && rel > wd->base && rel < b->len && ((unsigned char)b->data[rel] & 0xC0) == 0x80)
        rel--;
    /* A choice that never held text has no buffer yet. */
    const char *held = b->data != NULL ? b->data + wd->base : "";
    *text = restore_text(st, held, rel - wd->base, len);
    if (*text == held)
        *text = gw_arena_strndup(st->a, *text, *len);
    wd->base = rel;
    /* A rule the window did not wait for goes on after what left. */
    for (size_t i = 0; i < st->e->n; i++)
        if (wd->next[i] < rel)
            wd->next[i] = rel;
    /* Keep the longest lookbehind's context before the held text. */
    if (wd->base > st->e->context) {
        size_t drop = wd->base - st->e->context;
        gw_buf_consume(b, drop);
        wd->base -= drop;
        for (size_t i = 0; i < st->e->n; i++)
            wd->next[i] -= drop;
    }
    return -1;
}

static int
error_event(struct gw_safety_req *st, int rule)
{
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();
    char msg[256];
    int rc;

    snprintf(msg, sizeof(msg), "The response was blocked by the content safety rule \"%s\".",
             gw_worker_safety_rule_name(st, rule));
    json_object_object_add(e, "message", json_object_new_string(msg));
    json_object_object_add(e, "type", json_object_new_string("invalid_request_error"));
    json_object_object_add(e, "param", NULL);
    json_object_object_add(e, "code", json_object_new_string("content_blocked"));
    json_object_object_add(o, "error", e);
    rc = put_event(st, o);
    json_object_put(o);
    return rc;
}

/* A chunk of its own for text released outside a content event. */
static int
text_event(struct gw_safety_req *st, size_t i, const char *text, size_t len)
{
    struct json_object *o = json_object_new_object(), *choices = json_object_new_array();
    struct json_object *c = json_object_new_object(), *delta = json_object_new_object();
    int rc;

    json_object_object_add(o, "id", json_object_new_string(st->id ? st->id : ""));
    json_object_object_add(o, "object", json_object_new_string("chat.completion.chunk"));
    json_object_object_add(o, "created", json_object_new_int64(st->created));
    json_object_object_add(o, "model", json_object_new_string(st->model ? st->model : ""));
    json_object_object_add(delta, "content", json_object_new_string_len(text, (int)len));
    json_object_object_add(c, "index", json_object_new_int((int)i));
    json_object_object_add(c, "delta", delta);
    json_object_object_add(c, "finish_reason", NULL);
    json_object_array_add(choices, c);
    json_object_object_add(o, "choices", choices);
    rc = put_event(st, o);
    json_object_put(o);
    return rc;
}

/* Release everything every choice holds, as events of their own. */
static int
flush_all(struct gw_safety_req *st)
{
    for (size_t i = 0; i < SAFETY_CHOICES; i++) {
        if (!(st->used & (1u << i)))
            continue;
        const char *t;
        size_t len;
        int blocked = window_step(st, &st->windows[i], true, &t, &len);
        if (blocked >= 0)
            return error_event(st, blocked) == 0 ? GW_EPERM : GW_ENOMEM;
        st->used &= ~(1u << i);
        if (len > 0 && text_event(st, i, t, len) != 0)
            return GW_ENOMEM;
    }
    return 0;
}

/* One chunk: its choices' content goes through their windows. */
static int
chunk_filter(struct gw_safety_req *st, struct json_object *o, const char *ev, size_t evlen)
{
    struct json_object *choices = get(o, "choices"), *v;
    bool keep = false;

    if ((v = get(o, "id")) != NULL && st->id == NULL)
        st->id = gw_arena_strdup(st->a, json_object_get_string(v));
    if ((v = get(o, "model")) != NULL && st->model == NULL)
        st->model = gw_arena_strdup(st->a, json_object_get_string(v));
    if ((v = get(o, "created")) != NULL)
        st->created = json_object_get_int64(v);
    if (choices == NULL || !json_object_is_type(choices, json_type_array) ||
        gw_worker_json_len(choices) == 0) {
        /* Usage, or something else: what is held goes first. */
        int rc = flush_all(st);
        return rc != 0 ? rc : gw_buf_append(&st->out_events, ev, evlen);
    }
    for (size_t k = 0; k < gw_worker_json_len(choices); k++) {
        struct json_object *c = gw_worker_json_at(choices, k);
        struct json_object *delta = get(c, "delta"), *content = get(delta, "content");
        struct json_object *fin = get(c, "finish_reason");
        int64_t index = (v = get(c, "index")) != NULL ? json_object_get_int64(v) : 0;
        bool final = fin != NULL && !json_object_is_type(fin, json_type_null);
        bool has_text = content != NULL && json_object_is_type(content, json_type_string);
        const char *t;
        size_t len;
        int blocked;

        if (index < 0 || index >= SAFETY_CHOICES) {
            /* Past the windows: each piece is matched alone. */
            if (has_text) {
                blocked =
                    gw_worker_safety_scan(st, GW_SAFETY_OUTPUT, json_object_get_string(content),
                                          (size_t)json_object_get_string_len(content), &t, &len);
                if (blocked >= 0)
                    return error_event(st, blocked) == 0 ? GW_EPERM : GW_ENOMEM;
                json_object_set_string_len(content, t, (int)len);
            }
            keep = true;
            continue;
        }
        struct window *wd = &st->windows[index];
        if (has_text && gw_buf_append(&wd->buf, json_object_get_string(content),
                                      (size_t)json_object_get_string_len(content)) != 0)
            return GW_ENOMEM;
        if (!has_text && !final) {
            keep = true; /* a role, tool calls: as they are */
            continue;
        }
        st->used |= 1u << index;
        blocked = window_step(st, wd, final, &t, &len);
        if (blocked >= 0)
            return error_event(st, blocked) == 0 ? GW_EPERM : GW_ENOMEM;
        if (final)
            st->used &= ~(1u << index);
        if (len > 0 || has_text) {
            /* c is an object (it has text or a finish_reason); a delta
             * that is none (a provider's own shape) is replaced. */
            if (!json_object_is_type(delta, json_type_object)) {
                delta = json_object_new_object();
                json_object_object_add(c, "delta", delta);
            }
            json_object_object_add(delta, "content", json_object_new_string_len(t, (int)len));
        }
        /* An event that only carried text now held back is not sent. */
        keep |=
            len > 0 || final ||
            (json_object_is_type(delta, json_type_object) && json_object_object_length(delta) > 1);
    }
    return keep ? put_event(st, o) : 0;
}

int
gw_worker_safety_stream(struct gw_safety_req *st, const char *data, size_t len, gw_sse_emit_fn emit,
                        void *ctx)
{
    int rc = 0;

    st->out_events.len = 0;
    while (len > 0 && rc == 0) {
        size_t n = gw_worker_sse_event_end(data, len);
        if (n == 0)
            n = len; /* the last, incomplete event */
        const char *d = memmem(data, n, "data:", 5);
        struct json_object *o = NULL;
        if (d != NULL) {
            d += 5;
            while (d < data + n && *d == ' ')
                d++;
            size_t dlen = (size_t)(data + n - d);
            while (dlen > 0 && (d[dlen - 1] == '\n' || d[dlen - 1] == '\r'))
                dlen--;
            if (dlen == 6 && memcmp(d, "[DONE]", 6) == 0) {
                if ((rc = flush_all(st)) == 0)
                    rc = gw_buf_append(&st->out_events, data, n);
            } else {
                struct json_tokener *tok = json_tokener_new();
                if (tok != NULL) {
                    o = json_tokener_parse_ex(tok, d, (int)dlen);
                    json_tokener_free(tok);
                }
                if (o != NULL && json_object_is_type(o, json_type_object) &&
                    get(o, "error") == NULL)
                    rc = chunk_filter(st, o, data, n);
                else
                    rc = gw_buf_append(&st->out_events, data, n);
                json_object_put(o);
            }
        } else {
            rc = gw_buf_append(&st->out_events, data, n); /* comments, keep-alives */
        }
        data += n;
        len -= n;
    }
    if (st->out_events.len > 0) {
        int erc = emit(ctx, st->out_events.data, st->out_events.len);
        if (erc != 0)
            return erc;
    }
    return rc;
}

int
gw_worker_safety_stream_end(struct gw_safety_req *st, gw_sse_emit_fn emit, void *ctx)
{
    int rc;

    st->out_events.len = 0;
    rc = flush_all(st);
    if (st->out_events.len > 0) {
        int erc = emit(ctx, st->out_events.data, st->out_events.len);
        if (erc != 0)
            return erc;
    }
    return rc;
}
