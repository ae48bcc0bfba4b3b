/*
 * openai.c - the OpenAI wire format: OpenAI itself and every compatible
 * server (vLLM, SGLang, TGI, Ollama, DeepSeek, Qwen, Doubao, ...).
 *
 * The canonical request is already OpenAI's, so the adapter only names the
 * provider's model (by splicing it into the client's bytes), asks a stream
 * for its usage, and sets the credential.
 */
#include <string.h>

#include "worker/worker.h"

static const char *const endpoint_paths[] = {
    [GW_EP_CHAT] = "/chat/completions",
    [GW_EP_EMBEDDINGS] = "/embeddings",
};

static int
openai_request(struct gw_call *call)
{
    struct gw_request *req = call->req;
    struct json_object *so;

    call->url = gw_arena_printf(req->arena, "%s%s", call->base_url, endpoint_paths[call->endpoint]);
    /* The client's bytes with the model swapped in, when the shape allows;
     * else through json-c. */
    if (gw_worker_body_rewrite(req->arena, req->body, req->body_len, call->target_model,
                               call->stream, &call->body, &call->body_len) == 0)
        goto credential;
    json_object_object_add(call->json, "model", json_object_new_string(call->target_model));
    if (call->stream) {
        /* Usage comes only if asked for; the relay drops it again when the
         * client itself did not ask. */
        if (!json_object_object_get_ex(call->json, "stream_options", &so) ||
            !json_object_is_type(so, json_type_object)) {
            so = json_object_new_object();
            json_object_object_add(call->json, "stream_options", so);
        }
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
    }
    call->body = json_object_to_json_string_length(
        call->json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &call->body_len);
credential:
    if (call->api_key != NULL) {
        char *auth = gw_arena_printf(req->arena, "Authorization: Bearer %s", call->api_key);
        struct curl_slist *h = curl_slist_append(call->headers, auth);
        /* Leave no copy of the secret in the arena for a later dump. */
        memset(auth, 0, strlen(auth));
        if (h == NULL)
            return GW_ENOMEM;
        call->headers = h;
    }
    return 0;
}

const struct gw_provider_adapter gw_worker_provider_openai = {
    .type = "openai",
    .request = openai_request,
};

const struct gw_provider_adapter *
gw_worker_provider_adapter(enum gw_provider_type type)
{
    switch (type) {
    case GW_PROVIDER_OPENAI: return &gw_worker_provider_openai;
    }
    return NULL;
}
