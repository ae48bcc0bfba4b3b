/*
 * openai.c - the OpenAI wire format: OpenAI itself and every compatible
 * server (vLLM, SGLang, TGI, Ollama, DeepSeek, Qwen, Doubao, ...), and
 * Azure OpenAI, which speaks it at other URLs with another header.
 *
 * The canonical request is already OpenAI's, so the adapter only names the
 * provider's model (by splicing it into the client's bytes), asks a stream
 * for its usage, and sets the credential; the answer goes back as it came.
 * Only a quirk of the server (its preset's, see master/confprov.c) sends
 * the body through json-c: a server that refuses stream_options is not
 * asked for usage, one that knows only max_tokens gets it renamed.
 */
#include <string.h>

#include "worker/providers/providers.h"

static const char *const endpoint_paths[] = {
    [GW_EP_CHAT] = "/chat/completions",
    [GW_EP_EMBEDDINGS] = "/embeddings",
    /* Media (worker/media.c); GW_EP_VIDEO_GET has call->upstream_path. */
    [GW_EP_IMAGES] = "/images/generations",
    [GW_EP_SPEECH] = "/audio/speech",
    [GW_EP_TRANSCRIPTIONS] = "/audio/transcriptions",
    [GW_EP_TRANSLATIONS] = "/audio/translations",
    [GW_EP_VIDEOS] = "/videos",
    /* text APIs */
    [GW_EP_COMPLETIONS] = "/completions",
    [GW_EP_MODERATIONS] = "/moderations",
    [GW_EP_RESPONSES] = "/responses",
};

/* The path below the base URL. */
static const char *
endpoint_path(const struct gw_call *call)
{
    if (call->upstream_path != NULL)
        return call->upstream_path;
    if ((size_t)call->endpoint < sizeof(endpoint_paths) / sizeof(endpoint_paths[0]) &&
        endpoint_paths[call->endpoint] != NULL)
        return endpoint_paths[call->endpoint];
    return NULL;
}

/* call->body: the client's body for this provider, model named. */
static int
openai_body(struct gw_call *call)
{
    struct gw_request *req = call->req;
    unsigned quirks = call->provider != NULL ? call->provider->quirks : 0;
    /* Chat and completions streams tell their usage only when asked;
     * a Responses stream always does (response.completed). */
    bool ask_usage = call->stream && !(quirks & GW_QUIRK_NO_STREAM_USAGE) &&
                     (call->endpoint == GW_EP_CHAT || call->endpoint == GW_EP_COMPLETIONS);
    struct json_object *so, *mct;

    /* An upload or a GET has no JSON body to name the model in. */
    if (call->upload != NULL || call->method_get)
        return 0;
    bool rename =
        (quirks & GW_QUIRK_MAX_TOKENS) &&
        json_object_object_get_ex(gw_worker_call_json(call), "max_completion_tokens", &mct);
    /* The client's bytes with the model swapped in, when the shape allows;
     * else through json-c. */
    if (!rename &&
        gw_worker_body_rewrite(req->arena, req->body, req->body_len, call->scan, call->target_model,
                               ask_usage, &call->body, &call->body_len) == 0)
        return 0;
    struct json_object *json = gw_worker_call_json(call);
    json_object_object_add(json, "model", json_object_new_string(call->target_model));
    if (rename) {
        json_object_object_add(json, "max_tokens", json_object_get(mct));
        json_object_object_del(json, "max_completion_tokens");
    }
    if (ask_usage) {
        /* Usage comes only if asked for; the relay drops it again when the
         * client itself did not ask. */
        if (!json_object_object_get_ex(json, "stream_options", &so) ||
            !json_object_is_type(so, json_type_object)) {
            so = json_object_new_object();
            json_object_object_add(json, "stream_options", so);
        }
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
    } else if (quirks & GW_QUIRK_NO_STREAM_USAGE) {
        json_object_object_del(json, "stream_options");
    }
    call->body = json_object_to_json_string_length(
        json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &call->body_len);
    return call->body != NULL ? 0 : GW_ENOMEM;
}

static int
openai_request(struct gw_call *call)
{
    const char *path = endpoint_path(call);
    int rc;

    if (path == NULL)
        return GW_ENOENT;
    call->url = gw_arena_cat(call->req->arena, call->base_url, path);
    if ((rc = openai_body(call)) != 0)
        return rc;
    if (call->api_key != NULL)
        return gw_worker_prov_header_add(call, "Authorization: Bearer %s", call->api_key);
    return 0;
}

const struct gw_provider_adapter gw_worker_provider_openai = {
    .type = "openai",
    .request = openai_request,
};

/*
 * Azure OpenAI: {base}/openai/deployments/{deployment}/chat/completions
 * ?api-version=V, the key in an api-key header.  The deployment is the
 * target's (its model name unless it says otherwise), the version the
 * target's or else the provider's.
 */
static int
azure_request(struct gw_call *call)
{
    const char *deployment = NULL, *version = NULL, *path = endpoint_path(call);
    int rc;

    /* Azure's deployments serve chat, completions and embeddings; its
     * moderations and Responses API are elsewhere or absent. */
    if (path == NULL || call->endpoint == GW_EP_MODERATIONS || call->endpoint == GW_EP_RESPONSES)
        return GW_ENOENT;
    if (call->target != NULL && call->gen != NULL) {
        deployment = gw_gen_str(call->gen, call->target->deployment);
        version = gw_gen_str(call->gen, call->target->api_version);
    }
    if (version == NULL && call->provider != NULL && call->gen != NULL)
        version = gw_gen_str(call->gen, call->provider->api_version);
    if (deployment == NULL)
        deployment = call->target_model;
    call->url = gw_arena_printf(
        call->req->arena, "%s/openai/deployments/%s%s?api-version=%s", call->base_url,
        gw_worker_prov_path_escape(call->req->arena, deployment), path,
        gw_worker_prov_path_escape(call->req->arena, version != NULL ? version : "2024-10-21"));
    if ((rc = openai_body(call)) != 0)
        return rc;
    if (call->api_key != NULL)
        return gw_worker_prov_header_add(call, "api-key: %s", call->api_key);
    return 0;
}

const struct gw_provider_adapter gw_worker_provider_azure = {
    .type = "azure",
    .request = azure_request,
};
