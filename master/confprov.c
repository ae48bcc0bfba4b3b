/*
 * confprov.c - the keys of a provider that depend on its type: the
 * presets of the openai type (a base URL and the quirks of each
 * OpenAI-compatible service), azure's and anthropic's api_version,
 * bedrock's region, the max_tokens default of the formats that require
 * one, and the base URL each type has when the file gives none.
 *
 * The rows naming these parsers sit in master/schema.c with the others;
 * gw_master_confprov_finish runs once a provider's mapping is walked.
 */
#include <stdio.h>
#include <string.h>

#include "master/config_int.h"

/* The versions sent when the file names none. */
#define AZURE_API_VERSION "2024-10-21"
#define ANTHROPIC_VERSION "2023-06-01"

/*
 * One preset: where the service answers and what it does differently
 * from OpenAI.  The URLs are the services' documented OpenAI-compatible
 * endpoints, or the default port of the local servers.
 */
static const struct preset {
    const char *name;
    const char *base_url;
    unsigned quirks;
} presets[] = {
    {"deepseek", "https://api.deepseek.com/v1", GW_QUIRK_MAX_TOKENS},
    {"qwen", "https://dashscope.aliyuncs.com/compatible-mode/v1", GW_QUIRK_MAX_TOKENS},
    {"doubao", "https://ark.cn-beijing.volces.com/api/v3", GW_QUIRK_MAX_TOKENS},
    {"mistral", "https://api.mistral.ai/v1", GW_QUIRK_MAX_TOKENS | GW_QUIRK_NO_STREAM_USAGE},
    {"groq", "https://api.groq.com/openai/v1", 0},
    {"together", "https://api.together.xyz/v1", GW_QUIRK_MAX_TOKENS},
    {"vllm", "http://127.0.0.1:8000/v1", 0},
    {"sglang", "http://127.0.0.1:30000/v1", 0},
    {"tgi", "http://127.0.0.1:3000/v1", GW_QUIRK_MAX_TOKENS | GW_QUIRK_NO_STREAM_USAGE},
    {"ollama", "http://127.0.0.1:11434/v1", GW_QUIRK_MAX_TOKENS},
};

#define NPRESETS (sizeof(presets) / sizeof(presets[0]))

/* The base URL of the types that have one fixed service. */
static const char *const type_base_url[] = {
    [GW_PROVIDER_OPENAI] = "https://api.openai.com/v1",
    [GW_PROVIDER_AZURE] = NULL, /* each resource has its own host */
    [GW_PROVIDER_ANTHROPIC] = "https://api.anthropic.com/v1",
    [GW_PROVIDER_GEMINI] = "https://generativelanguage.googleapis.com/v1beta",
    [GW_PROVIDER_BEDROCK] = NULL, /* from the region */
};

/* gw_master_confprov_preset - preset: one of the names above, into a char *. */
int
gw_master_confprov_preset(struct load *ld, const struct node *n, const char *name,
                          const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a preset name");
    struct gw_buf b = {0};
    int rc;

    if (s == NULL)
        return GW_ECONFIG;
    for (size_t i = 0; i < NPRESETS; i++)
        if (strcmp(s, presets[i].name) == 0)
            return gw_master_confval_string(ld, n, name, f, dst);
    for (size_t i = 0; i < NPRESETS; i++)
        gw_buf_printf(&b, "%s%s", i == 0 ? "" : ", ", presets[i].name);
    rc = gw_master_config_error(ld, n, "unknown preset %s (known: %s)",
                                gw_master_config_show_node(ld, n), b.data != NULL ? b.data : "");
    gw_buf_free(&b);
    return rc;
}

/*
 * gw_master_confprov_stream_usage - stream_usage: whether the server takes
 * stream_options.include_usage; false sets GW_QUIRK_NO_STREAM_USAGE in
 * the unsigned quirks at dst.
 */
int
gw_master_confprov_stream_usage(struct load *ld, const struct node *n, const char *name,
                                const struct field *f, void *dst)
{
    bool on;

    if (gw_master_confval_bool(ld, n, name, f, &on) != 0)
        return GW_ECONFIG;
    if (on)
        *(unsigned *)dst &= ~(unsigned)GW_QUIRK_NO_STREAM_USAGE;
    else
        *(unsigned *)dst |= GW_QUIRK_NO_STREAM_USAGE;
    return 0;
}

/* A key that only some types read, given to another: name it and the types. */
static int
only_for(struct load *ld, const struct gw_provider *p, const struct node *map, const char *key,
         unsigned types, const char *which)
{
    const struct node *k = map_key(map, key);

    if (k == NULL || (types & (1u << p->type)) != 0)
        return 0;
    return gw_master_config_error(ld, k, "provider \"%s\": \"%s\" is for providers of type %s",
                                  p->name, key, which);
}

/* The region in a host such as bedrock-runtime.eu-west-1.amazonaws.com. */
static char *
region_from_url(struct load *ld, const char *url)
{
    static const char prefix[] = "bedrock-runtime.";
    const char *h = strstr(url, "://"), *dot;

    if (h == NULL || strncmp(h + 3, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    h += 3 + sizeof(prefix) - 1;
    if ((dot = strchr(h, '.')) == NULL || dot == h)
        return NULL;
    return gw_arena_strndup(ld->cfg->arena, h, (size_t)(dot - h));
}

/*
 * gw_master_confprov_finish - settle the type-dependent keys of provider
 * p once its mapping map is walked: refuse keys of another type, apply
 * the preset (its quirks unless the file says otherwise, its base URL
 * unless the file gives one), and give each type its defaults.
 */
int
gw_master_confprov_finish(struct load *ld, struct gw_provider *p, const struct node *map)
{
    const unsigned openai = 1u << GW_PROVIDER_OPENAI, azure = 1u << GW_PROVIDER_AZURE,
                   anthropic = 1u << GW_PROVIDER_ANTHROPIC, bedrock = 1u << GW_PROVIDER_BEDROCK;
    const char *base = type_base_url[p->type];

    if (only_for(ld, p, map, "preset", openai, "openai") != 0 ||
        only_for(ld, p, map, "stream_usage", openai | azure, "openai or azure") != 0 ||
        only_for(ld, p, map, "api_version", azure | anthropic, "azure or anthropic") != 0 ||
        only_for(ld, p, map, "region", bedrock, "bedrock") != 0 ||
        only_for(ld, p, map, "max_tokens", anthropic | bedrock, "anthropic or bedrock") != 0)
        return GW_ECONFIG;
    if (p->preset != NULL) {
        for (size_t i = 0; i < NPRESETS; i++) {
            if (strcmp(p->preset, presets[i].name) != 0)
                continue;
            base = presets[i].base_url;
            unsigned q = presets[i].quirks;
            if (map_key(map, "stream_usage") != NULL)
                q &= ~(unsigned)GW_QUIRK_NO_STREAM_USAGE;
            p->quirks |= q;
        }
    }
    if (p->type == GW_PROVIDER_AZURE && p->api_version == NULL)
        p->api_version = gw_arena_strdup(ld->cfg->arena, AZURE_API_VERSION);
    if (p->type == GW_PROVIDER_ANTHROPIC && p->api_version == NULL)
        p->api_version = gw_arena_strdup(ld->cfg->arena, ANTHROPIC_VERSION);
    if (p->type == GW_PROVIDER_BEDROCK) {
        if (p->region == NULL && p->base_url != NULL)
            p->region = region_from_url(ld, p->base_url);
        if (p->region == NULL)
            return gw_master_config_error(
                ld, map,
                "provider \"%s\": a bedrock provider needs \"region\" (such as us-east-1), "
                "unless its base_url names it",
                p->name);
        if (p->base_url == NULL)
            p->base_url = gw_arena_printf(ld->cfg->arena,
                                          "https://bedrock-runtime.%s.amazonaws.com", p->region);
    }
    if (p->base_url == NULL && base != NULL)
        p->base_url = gw_arena_strdup(ld->cfg->arena, base);
    if (p->base_url == NULL)
        return gw_master_config_error(
            ld, map, "provider \"%s\": \"base_url\" is required%s", p->name,
            p->type == GW_PROVIDER_AZURE ? " (https://RESOURCE.openai.azure.com)" : "");
    return 0;
}
