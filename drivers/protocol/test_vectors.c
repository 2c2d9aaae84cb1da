/*
 * Host test driver for hil_proto.c: decode one golden vector file and print its meaning,
 * one line per frame/record, in the form tests/protocol/test_vectors.py expects:
 *
 *   HELLO version=1 kind=<hex> os=<hex> host=<hex> token=<hex>
 *   REQUEST id=N
 *   RECORDS n=N
 *   PROCESS type=T pid=P size=S sha=<hex> path=<hex>
 *   SKIPPED type=T len=L
 *   END id=N count=C dropped=D
 *   ERROR <ErrorClassName>          (and stop)
 *   REENCODE ok|differs             (valid input only: re-encoded with the C encoder)
 *
 * Built by the pytest test with the host cc; this file alone uses libc.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_proto.h"

static void hex(const hil_u8 *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static hil_u8 out[HIL_MAX_FRAME];

int main(int argc, char **argv)
{
    FILE *f;
    hil_u8 *data;
    long size;
    size_t off = 0, reenc_off = 0;
    int canonical = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTOR.bin\n", argv[0]);
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(size ? (size_t)size : 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);

    while (off < (size_t)size) {
        struct hil_frame_header h;
        const hil_u8 *payload;
        int rc = hil_frame_size(data + off, (size_t)size - off);
        int n = 0;
        if (rc == HIL_E_NEED_MORE)
            rc = HIL_E_TRUNCATED_FRAME;
        if (rc < 0) {
            printf("ERROR %s\n", hil_strerror_name(rc));
            free(data);
            return 0;
        }
        hil_decode_header(data + off, (size_t)size - off, &h);
        payload = data + off + HIL_HEADER_LEN;
        if (h.type == HIL_FRAME_HELLO) {
            struct hil_hello m;
            rc = hil_decode_hello(payload, h.length, &m);
            if (rc == HIL_OK) {
                printf("HELLO version=%u kind=", m.protocol_version);
                hex(m.kind.ptr, m.kind.len);
                printf(" os=");
                hex(m.os.ptr, m.os.len);
                printf(" host=");
                hex(m.host.ptr, m.host.len);
                printf(" token=");
                hex(m.token.ptr, m.token.len);
                printf("\n");
                n = hil_encode_hello_token(out, sizeof out, m.kind.ptr, m.kind.len, m.os.ptr,
                                           m.os.len, m.host.ptr, m.host.len, m.token.ptr,
                                           m.token.len);
            }
        } else if (h.type == HIL_FRAME_REQUEST) {
            hil_u32 id;
            rc = hil_decode_request(payload, h.length, &id);
            if (rc == HIL_OK) {
                printf("REQUEST id=%lu\n", (unsigned long)id);
                n = hil_encode_request(out, sizeof out, id);
            }
        } else if (h.type == HIL_FRAME_END) {
            struct hil_end e;
            rc = hil_decode_end(payload, h.length, &e);
            if (rc == HIL_OK) {
                printf("END id=%lu count=%lu dropped=%lu\n", (unsigned long)e.request_id,
                       (unsigned long)e.count, (unsigned long)e.dropped);
                n = hil_encode_end(out, sizeof out, e.request_id, e.count, e.dropped);
            }
        } else { /* RECORDS: validate all first, then print (a frame is all or nothing) */
            struct hil_records_builder b;
            struct hil_record r;
            size_t roff = 0;
            unsigned long count = 0;
            while ((rc = hil_next_record(payload, h.length, &roff, &r)) == 1)
                count++;
            if (rc == 0) {
                printf("RECORDS n=%lu\n", count);
                hil_records_begin(&b, out, sizeof out);
                roff = 0;
                while (hil_next_record(payload, h.length, &roff, &r) == 1) {
                    if (r.type == HIL_REC_PROCESS_CREATED || r.type == HIL_REC_PROCESS_EXITED) {
                        hil_u8 rec[HIL_PROCESS_RECORD_MAX];
                        int rn;
                        printf("PROCESS type=%u pid=%lu size=%llu sha=", r.type,
                               (unsigned long)r.proc.pid, (unsigned long long)r.proc.image_size);
                        hex(r.proc.sha256, HIL_SHA256_LEN);
                        printf(" path=");
                        hex(r.proc.path, r.proc.path_len);
                        printf("\n");
                        rn = hil_encode_process_record(rec, sizeof rec, r.type, r.proc.pid,
                                                       r.proc.image_size, r.proc.sha256,
                                                       r.proc.path, r.proc.path_len);
                        if (rn < 0 || hil_records_append(&b, rec, (size_t)rn) != HIL_OK)
                            canonical = 0;
                    } else {
                        printf("SKIPPED type=%u len=%u\n", r.type, r.body_len);
                        if (hil_records_append(&b, r.raw, r.raw_len) != HIL_OK)
                            canonical = 0;
                    }
                }
                n = hil_records_finish(&b);
                rc = HIL_OK;
            }
        }
        if (rc < 0) {
            printf("ERROR %s\n", hil_strerror_name(rc));
            free(data);
            return 0;
        }
        if (n <= 0 || reenc_off + (size_t)n > (size_t)size ||
            memcmp(out, data + reenc_off, (size_t)n) != 0)
            canonical = 0;
        reenc_off += (size_t)n;
        off += HIL_HEADER_LEN + h.length;
    }
    printf("REENCODE %s\n", canonical ? "ok" : "differs");
    free(data);
    return 0;
}
