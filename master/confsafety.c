/*
 * confsafety.c - the safety: section of the configuration file (content
 * safety rules, the allowlist, the stream window) and a model's safety:
 * list of rule names.
 *
 * Every rule is compiled here once, with the code the workers use
 * (gw_safety_compile in shm/safety.c), so that a regular expression that
 * does not compile, a keyword file that cannot be read or a detector that
 * does not exist is a configuration error with its file, line and column,
 * and a reload with such a rule changes nothing.  Keyword files are read
 * here, by the master: the words travel to the workers in the routing
 * generation, so every worker matches the same list, and an edit of the
 * file takes effect on reload, like any other edit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "master/config_int.h"

#define SAFETY_WINDOW 256             /* bytes held back at most in a stream */
#define SAFETY_WINDOW_MIN 16          /* stream_window bounds */
#define SAFETY_WINDOW_MAX (64 * 1024) /* */
#define SAFETY_MAX_FILE (1024 * 1024) /* a keyword file */
#define SAFETY_MAX_WORD 256           /* bytes of one keyword */
#define SAFETY_MAX_TEXT                                                                            \
    (128 * 1024) /* words and patterns of all rules: the generation holds them */

/* clang-format off */
#define FIELD(k, fn, off, ...) {.key = (k), .parse = (fn), .offset = (off), __VA_ARGS__}
/* clang-format on */

struct strlist {
    char **v;
    size_t n;
};

/* A sequence of strings (possibly empty) into a struct strlist. */
static int
parse_strlist(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    struct strlist *l = dst;

    (void)f;
    if (n->kind != NODE_SEQUENCE)
        return gw_master_config_error(ld, n, "\"%s\" must be a list of strings", name);
    l->v = gw_arena_zalloc(ld->cfg->arena, (n->nitems ? n->nitems : 1) * sizeof(*l->v));
    for (size_t i = 0; i < n->nitems; i++) {
        const char *item = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        const char *s = gw_master_confval_scalar(ld, n->items[i], item, "a string");
        if (s == NULL)
            return GW_ECONFIG;
        l->v[i] = gw_arena_strdup(ld->cfg->arena, s);
    }
    l->n = n->nitems;
    return 0;
}

/* A rule's name: letters, digits, '.', '_' and '-' (it names metrics). */
static int
parse_rule_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
                void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n->len ||
        n->len > 64)
        return gw_master_config_error(
            ld, n, "\"%s\" may hold only letters, digits, '.', '_' and '-', at most 64 (got %s)",
            name, gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* One of count names into an int-sized enum; the message lists them. */
static int
parse_enum(struct load *ld, const struct node *n, const char *name, const char *const *names,
           size_t count, const char *what, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, what);
    struct gw_buf b = {0};
    int rc;

    if (s == NULL)
        return GW_ECONFIG;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(s, names[i]) == 0) {
            *(int *)dst = (int)i;
            return 0;
        }
    }
    for (size_t i = 0; i < count; i++)
        gw_buf_printf(&b, "%s%s", i == 0 ? "" : ", ", names[i]);
    rc = gw_master_config_error(ld, n, "\"%s\": unknown %s %s (known: %s)", name, what,
                                gw_master_config_show_node(ld, n), b.data != NULL ? b.data : "");
    gw_buf_free(&b);
    return rc;
}

static int
parse_type(struct load *ld, const struct node *n, const char *name, const struct field *f,
           void *dst)
{
    (void)f;
    return parse_enum(ld, n, name, gw_safety_type_names, GW_SAFETY_NTYPES, "rule type", dst);
}

static int
parse_action(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    (void)f;
    return parse_enum(ld, n, name, gw_safety_action_names, GW_SAFETY_NACTIONS, "action", dst);
}

static int
parse_detector(struct load *ld, const struct node *n, const char *name, const struct field *f,
               void *dst)
{
    (void)f;
    return parse_enum(ld, n, name, gw_safety_detector_names, GW_DETECT_NDETECTORS, "detector", dst);
}

/* on: [input, output], or one of them alone. */
static int
parse_on(struct load *ld, const struct node *n, const char *name, const struct field *f, void *dst)
{
    static const char *const dirs[] = {"input", "output"};
    unsigned *on = dst;
    size_t count = n->kind == NODE_SEQUENCE ? n->nitems : 1;

    (void)f;
    if (n->kind == NODE_SEQUENCE && gw_master_confval_sequence(ld, n, name, "direction") != 0)
        return GW_ECONFIG;
    *on = 0;
    for (size_t i = 0; i < count; i++) {
        const struct node *item = n->kind == NODE_SEQUENCE ? n->items[i] : n;
        int d;
        if (parse_enum(ld, item, name, dirs, 2, "direction", &d) != 0)
            return GW_ECONFIG;
        *on |= 1u << d;
    }
    return 0;
}

static int
parse_words(struct load *ld, const struct node *n, const char *name, const struct field *f,
            void *dst)
{
    struct gw_safety_rule *r = dst;
    struct strlist l = {0};

    if (parse_strlist(ld, n, name, f, &l) != 0)
        return GW_ECONFIG;
    r->words = l.v;
    r->nwords = l.n;
    return 0;
}

static const struct field rule_fields[] = {
    FIELD("name", parse_rule_name, offsetof(struct gw_safety_rule, name), .required = true),
    FIELD("type", parse_type, offsetof(struct gw_safety_rule, type), .required = true),
    FIELD("file", gw_master_confval_string, offsetof(struct gw_safety_rule, file)),
    FIELD("words", parse_words, 0),
    FIELD("whole_word", gw_master_confval_bool, offsetof(struct gw_safety_rule, whole_word)),
    FIELD("pattern", gw_master_confval_string, offsetof(struct gw_safety_rule, pattern)),
    FIELD("detector", parse_detector, offsetof(struct gw_safety_rule, detector)),
    FIELD("on", parse_on, offsetof(struct gw_safety_rule, on)),
    FIELD("action", parse_action, offsetof(struct gw_safety_rule, action)),
    FIELD("mask", gw_master_confval_string, offsetof(struct gw_safety_rule, mask)),
    FIELD("restore", gw_master_confval_bool, offsetof(struct gw_safety_rule, restore)),
    {.key = NULL},
};

struct allow_spec {
    struct strlist keys, tenants, models;
};

static const struct field allow_fields[] = {
    FIELD("keys", parse_strlist, offsetof(struct allow_spec, keys)),
    FIELD("tenants", parse_strlist, offsetof(struct allow_spec, tenants)),
    FIELD("models", parse_strlist, offsetof(struct allow_spec, models)),
    {.key = NULL},
};

static int parse_rules(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst);
static int parse_allow(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst);

/* moderation: block or flag only (mask needs a span, which a moderation
 * model does not give). */
static int
parse_moderation_action(struct load *ld, const struct node *n, const char *name,
                        const struct field *f, void *dst)
{
    if (parse_action(ld, n, name, f, dst) != 0)
        return GW_ECONFIG;
    if (*(enum gw_safety_action *)dst == GW_SAFETY_MASK)
        return gw_master_config_error(ld, n, "\"%s\" must be block or flag (got mask)", name);
    return 0;
}

/* on_error: allow (the request goes on) or block. */
static int
parse_on_error(struct load *ld, const struct node *n, const char *name, const struct field *f,
               void *dst)
{
    static const char *const names[] = {"allow", "block"};
    int v = 0;

    (void)f;
    if (parse_enum(ld, n, name, names, 2, "choice", &v) != 0)
        return GW_ECONFIG;
    *(bool *)dst = v == 1;
    return 0;
}

struct moderation_spec {
    char *model;
    struct strlist categories;
    enum gw_safety_action action;
    bool fail_closed;
};

static const struct field moderation_fields[] = {
    FIELD("model", gw_master_confval_string, offsetof(struct moderation_spec, model),
          .required = true),
    FIELD("categories", parse_strlist, offsetof(struct moderation_spec, categories)),
    FIELD("action", parse_moderation_action, offsetof(struct moderation_spec, action)),
    FIELD("on_error", parse_on_error, offsetof(struct moderation_spec, fail_closed)),
    {.key = NULL},
};

static int
parse_moderation(struct load *ld, const struct node *n, const char *name, const struct field *f,
                 void *dst)
{
    struct gw_safety *sf = dst;
    struct moderation_spec m = {.action = GW_SAFETY_BLOCK};

    if (gw_master_config_walk(ld, n, name, f->sub, &m) != 0)
        return GW_ECONFIG;
    sf->moderation_model = m.model;
    sf->moderation_categories = m.categories.v;
    sf->nmoderation_categories = m.categories.n;
    sf->moderation_action = m.action;
    sf->moderation_fail_closed = m.fail_closed;
    ld->moderation_node = map_value(n, "model");
    return 0;
}

static const struct field safety_fields[] = {
    FIELD("rules", parse_rules, 0, .sub = rule_fields),
    FIELD("moderation", parse_moderation, 0, .sub = moderation_fields),
    FIELD("allow", parse_allow, 0, .sub = allow_fields),
    FIELD("stream_window", gw_master_confval_size, offsetof(struct gw_safety, stream_window),
          .min = SAFETY_WINDOW_MIN, .max = SAFETY_WINDOW_MAX),
    {.key = NULL},
};

static int
parse_allow(struct load *ld, const struct node *n, const char *name, const struct field *f,
            void *dst)
{
    struct gw_safety *sf = dst;
    struct allow_spec a = {0};

    if (gw_master_config_walk(ld, n, name, f->sub, &a) != 0)
        return GW_ECONFIG;
    sf->allow_keys = a.keys.v;
    sf->nallow_keys = a.keys.n;
    sf->allow_tenants = a.tenants.v;
    sf->nallow_tenants = a.tenants.n;
    sf->allow_models = a.models.v;
    sf->nallow_models = a.models.n;
    return 0;
}

/* The key node of key in the rule's mapping, for messages about it. */
static const struct node *
rule_key(const struct node *map, const char *key)
{
    return map_key(map, key);
}

/*
 * Add the words of the rule's keyword file (one per line; blank lines and
 * lines starting with '#' are skipped; surrounding blanks trimmed) to the
 * inline ones.
 */
static int
words_from_file(struct load *ld, struct gw_safety_rule *r, const struct node *at)
{
    char *data = NULL, *line, *save = NULL;
    size_t len = 0, n = 0, cap;
    char **v;
    int rc = 0;

    if (gw_master_config_read_file(r->file, SAFETY_MAX_FILE, &data, &len) != 0)
        return gw_master_config_error(ld, at, "cannot read keyword file %s: %s",
                                      gw_master_config_show(ld, r->file, strlen(r->file)),
                                      errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
    if (strlen(data) != len) {
        rc = gw_master_config_error(ld, at, "keyword file %s holds a NUL byte",
                                    gw_master_config_show(ld, r->file, strlen(r->file)));
        goto out;
    }
    cap = r->nwords + 1;
    for (size_t i = 0; i < len; i++)
        cap += data[i] == '\n';
    v = gw_arena_zalloc(ld->cfg->arena, cap * sizeof(*v));
    for (size_t i = 0; i < r->nwords; i++)
        v[n++] = r->words[i];
    for (line = strtok_r(data, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        while (l > 0 && strchr(" \t\r", line[l - 1]) != NULL)
            line[--l] = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '\0' || *line == '#')
            continue;
        v[n++] = gw_arena_strdup(ld->cfg->arena, line);
    }
    r->words = v;
    r->nwords = n;
out:
    free(data);
    return rc;
}

/* The rule's pattern, at the column where PCRE2 found the problem when the
 * value is written on one line as it reads (no escapes to count). */
static int
regex_error(struct load *ld, const struct node *n, const char *name, const char *msg, size_t off)
{
    struct node at = *n;

    if (strpbrk(n->value, "\\'\"\n") == NULL)
        at.column += (int)off + (n->plain ? 0 : 1);
    return gw_master_config_error(ld, &at, "\"%s\": invalid regular expression at offset %zu: %s",
                                  name, off, msg);
}

/* Which keys go with which type and action; then compile the rule. */
static int
rule_finish(struct load *ld, struct gw_safety_rule *r, const struct node *map, const char *name,
            size_t *text)
{
    static const char *const only_keywords[] = {"file", "words", "whole_word"};
    const struct node *k;
    char err[256];
    size_t maxlen, off;

    for (size_t i = 0; i < 3; i++)
        if (r->type != GW_SAFETY_KEYWORDS && (k = rule_key(map, only_keywords[i])) != NULL)
            return gw_master_config_error(ld, k, "\"%s.%s\" is for rules of type keywords", name,
                                          only_keywords[i]);
    if (r->type != GW_SAFETY_REGEX && (k = rule_key(map, "pattern")) != NULL)
        return gw_master_config_error(ld, k, "\"%s.pattern\" is for rules of type regex", name);
    if (r->type != GW_SAFETY_PII && (k = rule_key(map, "detector")) != NULL)
        return gw_master_config_error(ld, k, "\"%s.detector\" is for rules of type pii", name);
    if (r->action != GW_SAFETY_MASK && (k = rule_key(map, "mask")) != NULL)
        return gw_master_config_error(ld, k, "\"%s.mask\" is for rules with action mask", name);
    if (r->action != GW_SAFETY_MASK && r->restore)
        return gw_master_config_error(ld, rule_key(map, "restore"),
                                      "\"%s.restore\" is for rules with action mask", name);
    if (r->restore && r->mask != NULL)
        return gw_master_config_error(ld, rule_key(map, "restore"),
                                      "\"%s.restore\" needs the numbered placeholders: drop "
                                      "\"mask\" to restore the values",
                                      name);
    if (r->restore && !(r->on & GW_SAFETY_ON_INPUT))
        return gw_master_config_error(ld, rule_key(map, "restore"),
                                      "\"%s.restore\" puts back what the input masked: the rule "
                                      "must apply on input",
                                      name);
    if (r->mask != NULL)
        for (const char *c = r->mask; *c; c++)
            if ((unsigned char)*c < ' ')
                return gw_master_config_error(ld, map_value(map, "mask"),
                                              "\"%s.mask\" must not hold control characters", name);
    switch (r->type) {
    case GW_SAFETY_KEYWORDS:
        if (r->file == NULL && r->nwords == 0)
            return gw_master_config_error(ld, map_value(map, "type"),
                                          "\"%s\": a keywords rule needs file or words", name);
        if (r->file != NULL && words_from_file(ld, r, map_value(map, "file")) != 0)
            return GW_ECONFIG;
        if (r->nwords == 0)
            return gw_master_config_error(ld, map_value(map, "file"),
                                          "\"%s\": keyword file %s holds no words", name,
                                          gw_master_config_show(ld, r->file, strlen(r->file)));
        for (size_t i = 0; i < r->nwords; i++) {
            size_t l = strlen(r->words[i]);
            bool ctl = false;
            for (size_t j = 0; j < l; j++)
                ctl |= (unsigned char)r->words[i][j] < ' ';
            if (l > SAFETY_MAX_WORD || ctl)
                return gw_master_config_error(
                    ld, map_value(map, r->file != NULL ? "file" : "words"),
                    "\"%s\": keyword %s is longer than %d bytes or holds control characters", name,
                    gw_master_config_show(ld, r->words[i], l), SAFETY_MAX_WORD);
            *text += l + 1;
        }
        break;
    case GW_SAFETY_REGEX:
        if (r->pattern == NULL)
            return gw_master_config_error(ld, map_value(map, "type"),
                                          "\"%s\": a regex rule needs a pattern", name);
        *text += strlen(r->pattern) + 1;
        break;
    case GW_SAFETY_PII:
        if (rule_key(map, "detector") == NULL)
            return gw_master_config_error(ld, map_value(map, "type"),
                                          "\"%s\": a pii rule needs a detector", name);
        break;
    default: break;
    }
    if (*text > SAFETY_MAX_TEXT)
        return gw_master_config_error(ld, map_value(map, "type"),
                                      "\"%s\": the words and patterns of all safety rules "
                                      "together exceed %d KiB",
                                      name, SAFETY_MAX_TEXT / 1024);

    struct gw_safety_spec spec = {
        .type = r->type,
        .detector = r->detector,
        .whole_word = r->whole_word,
        .pattern = r->pattern,
        .words = (const char *const *)r->words,
        .nwords = r->nwords,
    };
    void *code = gw_safety_compile(&spec, false, &maxlen, err, sizeof(err), &off);
    if (code == NULL) {
        if (r->type == GW_SAFETY_REGEX)
            return regex_error(ld, map_value(map, "pattern"),
                               gw_arena_printf(ld->tmp, "%s.pattern", name), err, off);
        return gw_master_config_error(ld, map_value(map, "type"), "\"%s\": cannot compile: %s",
                                      name, err);
    }
    pcre2_code_free(code);
    return 0;
}

static int
parse_rules(struct load *ld, const struct node *n, const char *name, const struct field *f,
            void *dst)
{
    struct gw_safety *sf = dst;
    size_t text = 0;

    if (gw_master_confval_sequence(ld, n, name, "rule") != 0)
        return GW_ECONFIG;
    if (n->nitems > GW_SAFETY_MAX_RULES)
        return gw_master_config_error(ld, n->items[GW_SAFETY_MAX_RULES], "\"%s\": at most %d rules",
                                      name, GW_SAFETY_MAX_RULES);
    sf->rules = gw_arena_zalloc(ld->cfg->arena, n->nitems * sizeof(*sf->rules));
    for (size_t i = 0; i < n->nitems; i++) {
        struct gw_safety_rule *r = &sf->rules[i];
        const char *item = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);

        r->action = GW_SAFETY_BLOCK;
        r->on = GW_SAFETY_ON_INPUT | GW_SAFETY_ON_OUTPUT;
        if (gw_master_config_walk(ld, n->items[i], item, f->sub, r) != 0)
            return GW_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (strcmp(sf->rules[j].name, r->name) == 0) {
                const struct node *at = map_value(n->items[i], "name");
                return gw_master_config_error(ld, at, "duplicate safety rule name %s",
                                              gw_master_config_show_node(ld, at));
            }
        if (rule_finish(ld, r, n->items[i], item, &text) != 0)
            return GW_ECONFIG;
        sf->nrules = i + 1;
    }
    return 0;
}

/* gw_master_confsafety_section - safety: at the top level. */
int
gw_master_confsafety_section(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst)
{
    struct gw_config *cfg = dst;

    (void)f;
    return gw_master_config_walk(ld, n, name, safety_fields, &cfg->safety);
}

/* gw_master_confsafety_model - a model's safety: [rule names], maybe []. */
int
gw_master_confsafety_model(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst)
{
    struct gw_model *m = dst;
    struct strlist l = {0};

    if (parse_strlist(ld, n, name, f, &l) != 0)
        return GW_ECONFIG;
    m->safety_names = l.v;
    m->nsafety_names = l.n;
    m->safety_set = true;
    if (ld->safety_refs_tail == NULL)
        ld->safety_refs_tail = &ld->safety_refs;
    for (size_t i = 0; i < n->nitems; i++) {
        struct ref *r = gw_arena_zalloc(ld->tmp, sizeof(*r));
        r->from = m;
        r->node = n->items[i];
        *ld->safety_refs_tail = r;
        ld->safety_refs_tail = &r->next;
    }
    return 0;
}

/*
 * gw_master_confsafety_finish - once the whole file is read: the models'
 * rule names resolved into masks (every rule for a model that names none),
 * and the stream window's default.
 */
int
gw_master_confsafety_finish(struct load *ld)
{
    struct gw_config *cfg = ld->cfg;
    struct gw_safety *sf = &cfg->safety;
    uint64_t all = sf->nrules >= 64 ? UINT64_MAX : (UINT64_C(1) << sf->nrules) - 1;

    if (sf->stream_window == 0)
        sf->stream_window = SAFETY_WINDOW;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        cfg->models[i].safety_rules = cfg->models[i].safety_set ? 0 : all;
        cfg->models[i].safety_moderation = !cfg->models[i].safety_set;
    }
    if (sf->moderation_model != NULL) {
        const struct gw_model *mm = gw_config_model_find(cfg, sf->moderation_model);
        if (mm == NULL)
            return gw_master_config_error(ld, ld->moderation_node,
                                          "no model named %s for safety.moderation",
                                          gw_master_config_show_node(ld, ld->moderation_node));
        sf->moderation_index = (size_t)(mm - cfg->models);
        /* The moderation model is not asked about its own input. */
        cfg->models[sf->moderation_index].safety_moderation = false;
    }
    for (struct ref *r = ld->safety_refs; r != NULL; r = r->next) {
        size_t j;
        if (strcmp(r->node->value, "moderation") == 0 && sf->moderation_model != NULL) {
            ((struct gw_model *)r->from)->safety_moderation = true;
            continue;
        }
        for (j = 0; j < sf->nrules; j++)
            if (strcmp(sf->rules[j].name, r->node->value) == 0)
                break;
        if (j == sf->nrules) {
            struct gw_buf b = {0};
            for (size_t k = 0; k < sf->nrules; k++)
                gw_buf_printf(&b, "%s%s", k == 0 ? "" : ", ", sf->rules[k].name);
            int rc = gw_master_config_error(ld, r->node, "no safety rule named %s (declared: %s)",
                                            gw_master_config_show_node(ld, r->node),
                                            b.data != NULL ? b.data : "none");
            gw_buf_free(&b);
            return rc;
        }
        ((struct gw_model *)r->from)->safety_rules |= UINT64_C(1) << j;
    }
    return 0;
}
