/*
 * Host unit test for hil_proto.c beyond the golden vectors: the agent's send path (saved
 * buffer -> RECORDS frames -> END) decoded back, the collector's one-pass split of a read,
 * encoder bounds, and every truncation of a valid stream (run under AddressSanitizer by the
 * pytest test: no read past the given length).
 * Prints "ok" and exits 0, or names the failed check and exits 1. Uses libc (host only).
 */
#include <stdio.h>
#include <string.h>

#include "hil_proto.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
            return 1;                                                         \
        }                                                                     \
    } while (0)

static hil_u8 saved[1u << 20];
static hil_u8 stream[1u << 21];
static hil_u8 frame[HIL_MAX_FRAME];

int main(void)
{
    size_t saved_len = 0, stream_len = 0, off = 0;
    hil_u32 i, n_records = 3000, seen = 0;
    hil_u8 sha[HIL_SHA256_LEN];
    char path[128];
    int rc, frames = 0;

    for (i = 0; i < HIL_SHA256_LEN; i++)
        sha[i] = (hil_u8)i;
    /* the agent saves records as they happen */
    for (i = 0; i < n_records; i++) {
        int len = snprintf(path, sizeof path, "C:\\Windows\\System32\\proc%lu.exe",
                           (unsigned long)i);
        rc = hil_encode_process_record(saved + saved_len, sizeof saved - saved_len,
                                       i % 2 ? HIL_REC_PROCESS_EXITED : HIL_REC_PROCESS_CREATED,
                                       1000 + i, (hil_u64)i * 4096, i % 3 ? sha : NULL,
                                       (const hil_u8 *)path, (size_t)len);
        CHECK(rc == (int)HIL_PROCESS_PREFIX_LEN + len);
        saved_len += (size_t)rc;
    }
    /* a REQUEST arrives: send everything in frames of at most 64 KiB, then END */
    while (off < saved_len) {
        struct hil_records_builder b;
        CHECK(hil_records_begin(&b, frame, sizeof frame) == HIL_OK);
        rc = hil_records_fill(&b, saved, saved_len, &off);
        CHECK(rc > 0);
        rc = hil_records_finish(&b);
        CHECK(rc > 0 && (size_t)rc <= HIL_MAX_FRAME);
        memcpy(stream + stream_len, frame, (size_t)rc);
        stream_len += (size_t)rc;
        frames++;
    }
    CHECK(frames >= 2);
    rc = hil_encode_end(stream + stream_len, sizeof stream - stream_len, 7, n_records, 0);
    CHECK(rc == (int)HIL_END_FRAME_LEN);
    stream_len += (size_t)rc;

    /* the collector side: decode it all back */
    off = 0;
    while (off < stream_len) {
        struct hil_frame_header h;
        int size = hil_frame_size(stream + off, stream_len - off);
        CHECK(size > 0);
        CHECK(hil_decode_header(stream + off, stream_len - off, &h) == HIL_OK);
        if (h.type == HIL_FRAME_RECORDS) {
            struct hil_record r;
            size_t roff = 0;
            while ((rc = hil_next_record(stream + off + HIL_HEADER_LEN, h.length, &roff, &r)) == 1) {
                CHECK(r.proc.pid == 1000 + seen);
                CHECK(r.proc.image_size == (hil_u64)seen * 4096);
                CHECK(r.type == (seen % 2 ? HIL_REC_PROCESS_EXITED : HIL_REC_PROCESS_CREATED));
                CHECK(r.proc.sha256[5] == (seen % 3 ? 5 : 0));
                snprintf(path, sizeof path, "C:\\Windows\\System32\\proc%lu.exe",
                         (unsigned long)seen);
                CHECK(r.proc.path_len == strlen(path));
                CHECK(memcmp(r.proc.path, path, r.proc.path_len) == 0);
                seen++;
            }
            CHECK(rc == 0);
        } else {
            struct hil_end e;
            CHECK(h.type == HIL_FRAME_END);
            CHECK(hil_decode_end(stream + off + HIL_HEADER_LEN, h.length, &e) == HIL_OK);
            CHECK(e.request_id == 7 && e.count == n_records && e.dropped == 0);
        }
        off += (size_t)size;
    }
    CHECK(seen == n_records);

    /* every truncation of the first frame is "need more", never a crash or overread */
    for (i = 0; i < 2000; i++)
        CHECK(hil_frame_size(stream, i) == HIL_E_NEED_MORE);

    /* every truncation of a RECORDS payload is a clean record error or a shorter walk */
    {
        struct hil_frame_header h;
        struct hil_record r;
        CHECK(hil_decode_header(stream, stream_len, &h) == HIL_OK);
        for (i = 0; i < 600; i++) {
            size_t roff = 0;
            while ((rc = hil_next_record(stream + HIL_HEADER_LEN, i, &roff, &r)) == 1)
                CHECK(roff <= i);
            CHECK(rc == 0 || rc == HIL_E_MALFORMED_RECORD);
        }
    }

    /* the host's one-pass index agrees with hil_next_record, and refuses what it must */
    {
        static hil_u32 starts[HIL_MAX_PAYLOAD / HIL_PROCESS_PREFIX_LEN + 1];
        struct hil_frame_header h;
        struct hil_record r;
        const hil_u8 *payload = stream + HIL_HEADER_LEN;
        size_t roff = 0, k = 0;
        long n;
        CHECK(hil_decode_header(stream, stream_len, &h) == HIL_OK);
        n = hil_index_process_records(payload, h.length, starts, 1u << 20);
        CHECK(n > 0);
        while (hil_next_record(payload, h.length, &roff, &r) == 1) {
            CHECK(k < (size_t)n && payload + starts[k] == r.raw);
            k++;
        }
        CHECK(k == (size_t)n);
        CHECK(hil_index_process_records(payload, h.length, starts, (size_t)n - 1) ==
              HIL_E_MALFORMED_RECORD); /* more records than room */
        for (i = 1; i < 600; i++) { /* a cut payload: refused unless cut between records */
            long m = hil_index_process_records(payload, i, starts, 1u << 20);
            size_t walked = 0;
            roff = 0;
            while ((rc = hil_next_record(payload, i, &roff, &r)) == 1)
                walked++;
            CHECK(m == (rc == 0 ? (long)walked : HIL_E_MALFORMED_RECORD));
        }
        memcpy(frame, payload, h.length);
        frame[0] = 9; /* an unknown record type: the caller walks with hil_next_record */
        CHECK(hil_index_process_records(frame, h.length, starts, 1u << 20) ==
              HIL_E_MALFORMED_RECORD);
        CHECK(hil_index_process_records(payload, 0, starts, 1u << 20) == 0);
    }

    /* the collector's one-pass split of a read: whole frames, RECORDS payloads indexed */
    {
        static hil_u32 table[4 * 64], starts[4096];
        static hil_u8 bad[HIL_MAX_FRAME + 16];
        size_t cut, k, at = 0, s = 0, first;
        long nf = hil_split_frames(stream, stream_len, table, 64, starts, 4096);
        CHECK(nf == frames + 1);
        for (k = 0; k < (size_t)nf; k++) {
            struct hil_frame_header h;
            CHECK(table[4 * k] == at);
            CHECK(hil_decode_header(stream + at, stream_len - at, &h) == HIL_OK);
            CHECK(table[4 * k + 1] == h.type && table[4 * k + 2] == h.length);
            if (h.type == HIL_FRAME_RECORDS) {
                struct hil_record r;
                size_t roff = 0;
                hil_u32 c = 0;
                while (hil_next_record(stream + at + HIL_HEADER_LEN, h.length, &roff, &r) == 1) {
                    CHECK(s + c < 4096 && stream + starts[s + c] == r.raw); /* offsets in the read */
                    c++;
                }
                CHECK(table[4 * k + 3] == c);
                s += c;
            } else {
                CHECK(table[4 * k + 3] == HIL_SPLIT_UNINDEXED);
            }
            at += HIL_HEADER_LEN + h.length;
        }
        CHECK(s == n_records && at == stream_len);
        for (cut = 0; cut < stream_len; cut += 997) { /* a read cut anywhere: the whole frames */
            size_t whole = 0;
            long expect = 0;
            int size;
            while ((size = hil_frame_size(stream + whole, cut - whole)) > 0) {
                whole += (size_t)size;
                expect++;
            }
            CHECK(hil_split_frames(stream, cut, table, 64, starts, 4096) == expect);
        }
        /* out of room: frames, then starts for the next payload's records */
        CHECK(hil_split_frames(stream, stream_len, table, 1, starts, 4096) == 1);
        CHECK(hil_split_frames(stream, stream_len, table, 64, starts, table[3]) == 1);
        CHECK(hil_split_frames(stream, stream_len, table, 64, starts, 0) == 0);
        CHECK(hil_split_frames(NULL, 0, table, 64, starts, 4096) == HIL_E_INVALID_ARG);
        /* a bad header after a whole frame: that frame, then the caller decides */
        first = HIL_HEADER_LEN + table[2];
        memcpy(bad, stream, first);
        memcpy(bad + first, "XXXXXXXXXXXX", 12);
        CHECK(hil_split_frames(bad, first + 12, table, 64, starts, 4096) == 1);
        /* a record the index refuses (an unknown type): the frame, unindexed */
        bad[HIL_HEADER_LEN] = 9;
        CHECK(hil_split_frames(bad, first, table, 64, starts, 4096) == 1);
        CHECK(table[3] == HIL_SPLIT_UNINDEXED && table[2] == first - HIL_HEADER_LEN);
    }

    /* encoders respect their capacity and the protocol bounds */
    CHECK(hil_encode_request(frame, HIL_REQUEST_FRAME_LEN - 1, 1) == HIL_E_NO_SPACE);
    CHECK(hil_encode_end(frame, HIL_END_FRAME_LEN - 1, 1, 0, 0) == HIL_E_NO_SPACE);
    CHECK(hil_encode_process_record(frame, 56, 1, 1, 0, NULL, (const hil_u8 *)"ab", 2) ==
          HIL_E_NO_SPACE);
    CHECK(hil_encode_process_record(frame, sizeof frame, 1, 1, 0, NULL, saved,
                                    HIL_MAX_PATH + 1) == HIL_E_INVALID_ARG);
    CHECK(hil_encode_process_record(frame, sizeof frame, 3, 1, 0, NULL, NULL, 0) ==
          HIL_E_INVALID_ARG);
    CHECK(hil_encode_hello(frame, sizeof frame, (const hil_u8 *)"k", 1, NULL, 0,
                           (const hil_u8 *)"", 0) == HIL_E_INVALID_ARG);
    CHECK(hil_encode_hello(frame, 10, (const hil_u8 *)"k", 1, NULL, 0,
                           (const hil_u8 *)"h", 1) == HIL_E_NO_SPACE);
    CHECK(hil_encode_header(frame, sizeof frame, HIL_FRAME_RECORDS, HIL_MAX_PAYLOAD + 1) ==
          HIL_E_INVALID_ARG);
    {
        /* HELLO's optional token: after host, decoded back, bounded; none = the old bytes */
        static hil_u8 plain[HIL_HELLO_FRAME_MAX];
        struct hil_hello m;
        hil_u8 tok[HIL_MAX_TOKEN + 1];
        const hil_u8 *k = (const hil_u8 *)"k", *h = (const hil_u8 *)"h";
        int n;
        for (i = 0; i < sizeof tok; i++)
            tok[i] = (hil_u8)i;
        rc = hil_encode_hello_token(frame, sizeof frame, k, 1, NULL, 0, h, 1, tok, HIL_MAX_TOKEN);
        CHECK(rc == (int)(HIL_HEADER_LEN + 10 + 2 + HIL_MAX_TOKEN));
        CHECK(hil_encode_hello_token(frame, sizeof frame, (const hil_u8 *)saved, 255, saved, 255,
                                     saved, 255, tok, HIL_MAX_TOKEN) == (int)HIL_HELLO_FRAME_MAX);
        rc = hil_encode_hello_token(frame, sizeof frame, k, 1, NULL, 0, h, 1, tok, HIL_MAX_TOKEN);
        CHECK(hil_decode_hello(frame + HIL_HEADER_LEN, (size_t)rc - HIL_HEADER_LEN, &m) == HIL_OK);
        CHECK(m.token.len == HIL_MAX_TOKEN && memcmp(m.token.ptr, tok, HIL_MAX_TOKEN) == 0);
        CHECK(m.host.len == 1 && m.host.ptr[0] == 'h');
        for (i = 0; i < (hil_u32)rc - HIL_HEADER_LEN; i++) { /* every cut: no overread */
            int d = hil_decode_hello(frame + HIL_HEADER_LEN, i, &m);
            CHECK(i == 10 ? d == HIL_OK && m.token.len == 0 : d == HIL_E_MALFORMED_FRAME);
        }
        CHECK(hil_encode_hello_token(frame, sizeof frame, k, 1, NULL, 0, h, 1, tok,
                                     HIL_MAX_TOKEN + 1) == HIL_E_INVALID_ARG);
        CHECK(hil_encode_hello_token(frame, sizeof frame, k, 1, NULL, 0, h, 1, NULL, 3) ==
              HIL_E_INVALID_ARG);
        CHECK(hil_encode_hello_token(frame, HIL_HEADER_LEN + 10 + 2 + 4, k, 1, NULL, 0, h, 1, tok,
                                     5) == HIL_E_NO_SPACE);
        n = hil_encode_hello(plain, sizeof plain, k, 1, NULL, 0, h, 1);
        rc = hil_encode_hello_token(frame, sizeof frame, k, 1, NULL, 0, h, 1, NULL, 0);
        CHECK(n == rc && n == (int)HIL_HEADER_LEN + 10 && memcmp(plain, frame, (size_t)n) == 0);
        CHECK(hil_decode_hello(frame + HIL_HEADER_LEN, (size_t)rc - HIL_HEADER_LEN, &m) == HIL_OK);
        CHECK(m.token.len == 0);
    }
    {
        /* a corrupt saved buffer is reported, not walked past */
        struct hil_records_builder b;
        size_t soff = 0;
        hil_u8 bad[6] = {1, 0, 200, 0, 0, 0};
        hil_records_begin(&b, frame, sizeof frame);
        CHECK(hil_records_fill(&b, bad, sizeof bad, &soff) == HIL_E_MALFORMED_RECORD);
        CHECK(soff == 0 && b.count == 0);
    }
    printf("ok %lu records in %d frames\n", (unsigned long)seen, frames);
    return 0;
}
