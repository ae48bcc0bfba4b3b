/*
 * fuzz_answer.c - the answer kept for the response cache and for capture
 * (worker/answer.c): a stream, as the client got it, put back together
 * into one chat.completion, and a stored one replayed as a stream to the
 * next client that asks.  The stream is what a provider sent.
 *
 * Promises checked:
 * - the answer put together is the same however the stream was cut, and
 *   is one JSON object;
 * - a complete answer replays as well-formed events ("data: " and a JSON
 *   object, then "data: [DONE]"), and replaying what such a replay puts
 *   together gives it back: what the cache serves, it serves the same
 *   every time.
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

/* The stream put together, in a (NULL: none), and whether it is whole. */
static const char *
assemble(struct gw_arena *a, const char *data, size_t len, uint8_t cut, size_t *out_len,
         bool *complete)
{
    struct gw_answer *an = gw_worker_answer_create(a);

    for (size_t off = 0; off < len;) {
        size_t n = fuzz_piece(cut, len - off);
        gw_worker_answer_feed(an, data + off, n);
        off += n;
    }
    return gw_worker_answer_text(an, false, 0, 0, out_len, complete);
}

/* A stored answer replayed as a stream (checked event by event) and put
 * together again. */
static const char *
replay_assemble(struct gw_arena *a, const char *answer, size_t len, size_t *out_len, bool *complete)
{
    struct gw_buf ev = {0};

    FUZZ_CHECK(gw_worker_answer_replay(answer, len, true, &ev) == 0);
    fuzz_openai_events(&ev);
    const char *again = assemble(a, ev.data, ev.len, 0, out_len, complete);
    gw_buf_free(&ev);
    return again;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    gw_log_level = -1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, wl = 0, bl = 0;
    bool wc = false, bc = false;
    struct gw_arena *a = gw_arena_create(4096);
    const char *whole = assemble(a, in, len, 0, &wl, &wc);
    const char *bytes = assemble(a, in, len, data[0], &bl, &bc);

    FUZZ_CHECK((whole == NULL) == (bytes == NULL));
    if (whole != NULL) {
        FUZZ_CHECK(wl == bl && memcmp(whole, bytes, wl) == 0 && wc == bc);
        FUZZ_CHECK(fuzz_is_object(whole, wl));
    }
    if (whole != NULL && wc) {
        /* Replayed and put together again: the role is always
         * "assistant" and every tool call has its index, so the first
         * round may tidy the answer; from then on it is a fixed point. */
        size_t l1 = 0, l2 = 0;
        bool c1 = false, c2 = false;
        const char *once = replay_assemble(a, whole, wl, &l1, &c1);
        FUZZ_CHECK(once != NULL && c1);
        const char *twice = replay_assemble(a, once, l1, &l2, &c2);
        FUZZ_CHECK(twice != NULL && c2 && l2 == l1 && memcmp(once, twice, l1) == 0);
    }
    gw_arena_destroy(a);
    return 0;
}
