/*
 * models.c - aigwctl model list|show|example: the model catalogue of the
 * running gateway (master/catalogue.c), and a ready call of one model,
 * for its type, against the gateway's own address with the API key left
 * to $AIGW_API_KEY.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"

/* What to call for each model type: the path, the JSON body after the
 * model (curl), and the SDK call (Python, Node) after its model argument. */
static const struct example {
    const char *type;
    const char *path;
    const char *body;   /* JSON members after "model"; NULL: a multipart upload */
    const char *python; /* client.<...>(model=M, <args>) */
    const char *py_args;
    const char *node; /* client.<...>({ model: M, <args> }) */
    const char *node_args;
    const char *python_out; /* printed result */
    const char *node_out;
} examples[] = {
    {"chat", "/chat/completions", "\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]",
     "chat.completions.create", "messages=[{\"role\": \"user\", \"content\": \"Hello!\"}]",
     "chat.completions.create", "messages: [{ role: 'user', content: 'Hello!' }]",
     "r.choices[0].message.content", "r.choices[0].message.content"},
    {"completions", "/completions", "\"prompt\": \"Say hello\", \"max_tokens\": 16",
     "completions.create", "prompt=\"Say hello\", max_tokens=16", "completions.create",
     "prompt: 'Say hello', max_tokens: 16", "r.choices[0].text", "r.choices[0].text"},
    {"embeddings", "/embeddings", "\"input\": \"The quick brown fox\"", "embeddings.create",
     "input=\"The quick brown fox\"", "embeddings.create", "input: 'The quick brown fox'",
     "len(r.data[0].embedding)", "r.data[0].embedding.length"},
    {"images", "/images/generations",
     "\"prompt\": \"A lighthouse at dawn\", \"size\": \"1024x1024\"", "images.generate",
     "prompt=\"A lighthouse at dawn\", size=\"1024x1024\"", "images.generate",
     "prompt: 'A lighthouse at dawn', size: '1024x1024'", "r.data[0]", "r.data[0]"},
    {"audio", "/audio/transcriptions", NULL, "audio.transcriptions.create",
     "file=open(\"audio.mp3\", \"rb\")", "audio.transcriptions.create",
     "file: fs.createReadStream('audio.mp3')", "r.text", "r.text"},
    {"moderations", "/moderations", "\"input\": \"Is this text fine?\"", "moderations.create",
     "input=\"Is this text fine?\"", "moderations.create", "input: 'Is this text fine?'",
     "r.results[0].flagged", "r.results[0].flagged"},
    {"responses", "/responses", "\"input\": \"Say hello\"", "responses.create",
     "input=\"Say hello\"", "responses.create", "input: 'Say hello'", "r.output_text",
     "r.output_text"},
    {"video", "/videos", "\"prompt\": \"A paper boat on a river\"", "videos.create",
     "prompt=\"A paper boat on a river\"", "videos.create", "prompt: 'A paper boat on a river'",
     "r.id, r.status", "r.id, r.status"},
};

static void
model_print_row(struct json_object *m, int w)
{
    struct json_object *x = NULL, *v, *targets = NULL, *pricing = NULL;
    char price[64] = "-", ctx[32] = "-", tl[512] = "";
    size_t off = 0;

    json_object_object_get_ex(m, "aigw", &x);
    if (json_object_object_get_ex(x, "context_length", &v) && v != NULL)
        snprintf(ctx, sizeof(ctx), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(x, "pricing", &pricing) && pricing != NULL)
        snprintf(price, sizeof(price), "%s/%s", gw_admin_field(pricing, "input"),
                 gw_admin_field(pricing, "output"));
    json_object_object_get_ex(x, "targets", &targets);
    for (size_t i = 0; i < json_object_array_length(targets) && off < sizeof(tl); i++) {
        struct json_object *t = json_object_array_get_idx(targets, i);
        off += (size_t)snprintf(tl + off, sizeof(tl) - off, "%s%s/%s(%s)", i ? "," : "",
                                gw_admin_field(t, "provider"), gw_admin_field(t, "model"),
                                gw_admin_field(t, "status"));
    }
    printf("%-*s  %-11s  %-8s  %9s  %-15s  %s\n", w, gw_admin_field(m, "id"),
           gw_admin_field(x, "type"), gw_admin_field(x, "status"), ctx, price, tl);
}

static void
model_print_header(int w)
{
    printf("%-*s  %-11s  %-8s  %9s  %-15s  %s\n", w, "MODEL", "TYPE", "STATUS", "CONTEXT",
           "PRICE_IN/OUT", "TARGETS");
}

static int
model_list(int argc, char **argv)
{
    struct json_object *reply = NULL, *arr;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0)
            return gw_admin_usage_error("model list: unknown argument %s", argv[i]);
        gw_admin_json_set();
    }
    if ((rc = gw_admin_call(gw_admin_request("model.list"), &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "models", &arr);
    if (gw_admin_json()) {
        gw_admin_print_json(reply, "models");
    } else {
        int w = gw_admin_column_width(arr, "id", 5);
        model_print_header(w);
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            model_print_row(json_object_array_get_idx(arr, i), w);
    }
    json_object_put(reply);
    return 0;
}

/* s as a JSON string literal (also a Python and JavaScript one). */
static const char *
literal(const char *s)
{
    static char out[1024];
    struct json_object *o = json_object_new_string(s);

    snprintf(out, sizeof(out), "%s",
             json_object_to_json_string_ext(o, JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return out;
}

/* s for inside single quotes in a shell: ' becomes '\''. */
static void
shell_quoted(const char *s)
{
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", stdout);
        else
            putchar(*s);
    }
}

static int
example_print(struct json_object *m, const char *url, const char *lang)
{
    struct json_object *x = NULL;
    const struct example *e = &examples[0];
    const char *model = gw_admin_field(m, "id");
    char lit[1024];

    json_object_object_get_ex(m, "aigw", &x);
    for (size_t i = 0; i < sizeof(examples) / sizeof(examples[0]); i++)
        if (strcmp(gw_admin_field(x, "type"), examples[i].type) == 0)
            e = &examples[i];
    snprintf(lit, sizeof(lit), "%s", literal(model));
    if (strcmp(lang, "curl") == 0) {
        printf("curl %s/v1%s \\\n  -H \"Authorization: Bearer $AIGW_API_KEY\" \\\n", url, e->path);
        if (e->body == NULL) {
            printf("  -F model='");
            shell_quoted(model);
            printf("' \\\n  -F file=@audio.mp3\n");
        } else {
            printf("  -H \"Content-Type: application/json\" \\\n  -d '{\"model\": ");
            shell_quoted(lit);
            printf(", ");
            shell_quoted(e->body);
            printf("}'\n");
        }
    } else if (strcmp(lang, "python") == 0) {
        printf("import os\n\nfrom openai import OpenAI\n\n"
               "client = OpenAI(base_url=\"%s/v1\", api_key=os.environ[\"AIGW_API_KEY\"])\n"
               "r = client.%s(model=%s, %s)\nprint(%s)\n",
               url, e->python, lit, e->py_args, e->python_out);
    } else {
        printf(
            "%s"
            "import OpenAI from 'openai';\n\n"
            "const client = new OpenAI({ baseURL: '%s/v1', apiKey: process.env.AIGW_API_KEY });\n"
            "const r = await client.%s({ model: %s, %s });\nconsole.log(%s);\n",
            e->body == NULL ? "import fs from 'node:fs';\n" : "", url, e->node, lit, e->node_args,
            e->node_out);
    }
    return 0;
}

/* show MODEL [--json] and example MODEL --lang L: one model. */
static int
model_one(bool example, int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *m;
    const char *name = NULL, *lang = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (!example && strcmp(argv[i], "--json") == 0)
            gw_admin_json_set();
        else if (example && strcmp(argv[i], "--lang") == 0 && i + 1 < argc)
            lang = argv[++i];
        else if (name == NULL && argv[i][0] != '-')
            name = argv[i];
        else
            return gw_admin_usage_error("model: unexpected or incomplete argument %s", argv[i]);
    }
    if (name == NULL)
        return gw_admin_usage_error("model: %s", "which model? give its name");
    if (example && (lang == NULL || (strcmp(lang, "curl") != 0 && strcmp(lang, "python") != 0 &&
                                     strcmp(lang, "node") != 0)))
        return gw_admin_usage_error("model example: %s", "--lang curl, python or node");
    req = gw_admin_request("model.show");
    json_object_object_add(req, "model", json_object_new_string(name));
    if ((rc = gw_admin_call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "model", &m);
    if (example) {
        rc = example_print(m, gw_admin_field(reply, "url"), lang);
    } else if (gw_admin_json()) {
        gw_admin_print_json(reply, "model");
    } else {
        struct json_object *x = NULL, *targets = NULL;
        json_object_object_get_ex(m, "aigw", &x);
        json_object_object_get_ex(x, "targets", &targets);
        int w = (int)strlen(name) > 5 ? (int)strlen(name) : 5;
        model_print_header(w);
        model_print_row(m, w);
        printf("\n%-24s  %-6s  %-8s  %-9s  %-6s  %s\n", "TARGET", "WEIGHT", "STATUS", "BREAKER",
               "HEALTH", "PRICE_IN/OUT");
        for (size_t i = 0; i < json_object_array_length(targets); i++) {
            struct json_object *t = json_object_array_get_idx(targets, i), *p = NULL;
            char tn[256], price[64] = "-";
            snprintf(tn, sizeof(tn), "%s/%s", gw_admin_field(t, "provider"),
                     gw_admin_field(t, "model"));
            if (json_object_object_get_ex(t, "pricing", &p) && p != NULL)
                snprintf(price, sizeof(price), "%s/%s", gw_admin_field(p, "input"),
                         gw_admin_field(p, "output"));
            printf("%-24s  %-6s  %-8s  %-9s  %-6s  %s\n", tn, gw_admin_field(t, "weight"),
                   gw_admin_field(t, "status"), gw_admin_field(t, "breaker"),
                   gw_admin_field(t, "health"), price);
        }
    }
    json_object_put(reply);
    return rc;
}

int
gw_admin_model(int argc, char **argv)
{
    if (argc < 1)
        return gw_admin_usage_error("model: %s", "which subcommand? list, show, example");
    if (strcmp(argv[0], "list") == 0)
        return model_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "show") == 0)
        return model_one(false, argc - 1, argv + 1);
    if (strcmp(argv[0], "example") == 0)
        return model_one(true, argc - 1, argv + 1);
    return gw_admin_usage_error("model: unknown subcommand %s", argv[0]);
}
