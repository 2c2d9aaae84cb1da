/*
 * kernel-hil agent wire protocol v1: C codec. See hil_proto.h and PROTOCOL.md.
 * Freestanding: no libc calls, no allocation; all integers little-endian on the wire,
 * assembled byte by byte so host byte order and alignment never matter.
 */
#include "hil_proto.h"

/* ---- little-endian helpers ---- */

static hil_u16 get16(const hil_u8 *p)
{
    return (hil_u16)(p[0] | ((hil_u16)p[1] << 8));
}

static hil_u32 get32(const hil_u8 *p)
{
    return (hil_u32)p[0] | ((hil_u32)p[1] << 8) | ((hil_u32)p[2] << 16) | ((hil_u32)p[3] << 24);
}

static hil_u64 get64(const hil_u8 *p)
{
    return (hil_u64)get32(p) | ((hil_u64)get32(p + 4) << 32);
}

static void put16(hil_u8 *p, hil_u16 v)
{
    p[0] = (hil_u8)(v & 0xFFu);
    p[1] = (hil_u8)(v >> 8);
}

static void put32(hil_u8 *p, hil_u32 v)
{
    p[0] = (hil_u8)(v & 0xFFu);
    p[1] = (hil_u8)((v >> 8) & 0xFFu);
    p[2] = (hil_u8)((v >> 16) & 0xFFu);
    p[3] = (hil_u8)(v >> 24);
}

static void put64(hil_u8 *p, hil_u64 v)
{
    put32(p, (hil_u32)(v & 0xFFFFFFFFu));
    put32(p + 4, (hil_u32)(v >> 32));
}

static void copy_bytes(hil_u8 *dst, const hil_u8 *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = src[i];
}

/* ---- decoding ---- */

int hil_decode_header(const hil_u8 *buf, size_t len, struct hil_frame_header *out)
{
    hil_u32 length;
    if (buf == NULL || out == NULL)
        return HIL_E_INVALID_ARG;
    /* check what we have so garbage is rejected as early as possible */
    if (len >= 1 && buf[0] != HIL_MAGIC0)
        return HIL_E_BAD_MAGIC;
    if (len >= 2 && buf[1] != HIL_MAGIC1)
        return HIL_E_BAD_MAGIC;
    if (len < HIL_HEADER_LEN)
        return HIL_E_NEED_MORE;
    if (buf[2] != HIL_VERSION)
        return HIL_E_UNSUPPORTED_VERSION;
    if (buf[3] < HIL_FRAME_HELLO || buf[3] > HIL_FRAME_END)
        return HIL_E_UNKNOWN_FRAME_TYPE;
    length = get32(buf + 4);
    if (length > HIL_MAX_PAYLOAD)
        return HIL_E_FRAME_TOO_LARGE;
    out->version = buf[2];
    out->type = buf[3];
    out->length = length;
    return HIL_OK;
}

int hil_frame_size(const hil_u8 *buf, size_t len)
{
    struct hil_frame_header h;
    int rc = hil_decode_header(buf, len, &h);
    if (rc != HIL_OK)
        return rc;
    if (len - HIL_HEADER_LEN < h.length)
        return HIL_E_NEED_MORE;
    return (int)(HIL_HEADER_LEN + h.length);
}

static int decode_str16(const hil_u8 *p, size_t len, size_t *off, hil_u16 minimum,
                        struct hil_str *out)
{
    hil_u16 n;
    if (len - *off < 2)
        return HIL_E_MALFORMED_FRAME;
    n = get16(p + *off);
    *off += 2;
    if (n < minimum || n > HIL_MAX_HELLO_STRING)
        return HIL_E_MALFORMED_FRAME;
    if (len - *off < n)
        return HIL_E_MALFORMED_FRAME;
    out->ptr = p + *off;
    out->len = n;
    *off += n;
    return HIL_OK;
}

int hil_decode_hello(const hil_u8 *payload, size_t len, struct hil_hello *out)
{
    size_t off = 2;
    int rc;
    if (payload == NULL || out == NULL)
        return HIL_E_INVALID_ARG;
    if (len < 2)
        return HIL_E_MALFORMED_FRAME;
    out->protocol_version = get16(payload);
    rc = decode_str16(payload, len, &off, 1, &out->kind);
    if (rc == HIL_OK)
        rc = decode_str16(payload, len, &off, 0, &out->os);
    if (rc == HIL_OK)
        rc = decode_str16(payload, len, &off, 1, &out->host);
    out->token.ptr = NULL;
    out->token.len = 0;
    if (rc == HIL_OK && off < len) /* the optional token (HIL_MAX_TOKEN == the string bound) */
        rc = decode_str16(payload, len, &off, 0, &out->token);
    return rc; /* bytes after the token are future fields: ignored */
}

int hil_decode_request(const hil_u8 *payload, size_t len, hil_u32 *request_id)
{
    if (payload == NULL || request_id == NULL)
        return HIL_E_INVALID_ARG;
    if (len < 4)
        return HIL_E_MALFORMED_FRAME;
    *request_id = get32(payload);
    return HIL_OK;
}

int hil_decode_end(const hil_u8 *payload, size_t len, struct hil_end *out)
{
    if (payload == NULL || out == NULL)
        return HIL_E_INVALID_ARG;
    if (len < 12)
        return HIL_E_MALFORMED_FRAME;
    out->request_id = get32(payload);
    out->count = get32(payload + 4);
    out->dropped = get32(payload + 8);
    return HIL_OK;
}

int hil_next_record(const hil_u8 *payload, size_t len, size_t *off, struct hil_record *out)
{
    const hil_u8 *r;
    size_t left;
    hil_u16 body_len;
    if (payload == NULL || off == NULL || out == NULL || *off > len)
        return HIL_E_INVALID_ARG;
    left = len - *off;
    if (left == 0)
        return 0;
    if (left < HIL_RECORD_HEADER_LEN)
        return HIL_E_MALFORMED_RECORD;
    r = payload + *off;
    body_len = get16(r + 2);
    if (left - HIL_RECORD_HEADER_LEN < body_len)
        return HIL_E_MALFORMED_RECORD;
    out->type = get16(r);
    out->body_len = body_len;
    out->body = r + HIL_RECORD_HEADER_LEN;
    out->raw = r;
    out->raw_len = (hil_u32)HIL_RECORD_HEADER_LEN + body_len;
    if (out->type == HIL_REC_PROCESS_CREATED || out->type == HIL_REC_PROCESS_EXITED) {
        const hil_u8 *b = out->body;
        hil_u16 path_len;
        if (body_len < HIL_PROCESS_BODY_FIXED)
            return HIL_E_MALFORMED_RECORD;
        if (get16(b) != 4 || get16(b + 6) != 8 || get16(b + 16) != HIL_SHA256_LEN)
            return HIL_E_MALFORMED_RECORD;
        path_len = get16(b + 50);
        if (path_len > HIL_MAX_PATH || (size_t)HIL_PROCESS_BODY_FIXED + path_len > body_len)
            return HIL_E_MALFORMED_RECORD;
        out->proc.pid = get32(b + 2);
        out->proc.image_size = get64(b + 8);
        out->proc.sha256 = b + 18;
        out->proc.path = b + 52;
        out->proc.path_len = path_len;
    } else {
        out->proc.pid = 0;
        out->proc.image_size = 0;
        out->proc.sha256 = NULL;
        out->proc.path = NULL;
        out->proc.path_len = 0;
    }
    *off += out->raw_len;
    return 1;
}

/* hil_index_process_records without the argument checks, each start plus `bias`;
 * HIL_E_NO_SPACE when there are more than cap */
static long index_records(const hil_u8 *payload, size_t len, hil_u32 *starts, size_t cap,
                          hil_u32 bias)
{
    size_t off = 0, n = 0;
    while (off < len) {
        const hil_u8 *r = payload + off;
        hil_u16 type, path_len;
        if (len - off < HIL_PROCESS_PREFIX_LEN)
            return HIL_E_MALFORMED_RECORD;
        if (n == cap)
            return HIL_E_NO_SPACE;
        type = get16(r);
        path_len = get16(r + 54);
        if ((type != HIL_REC_PROCESS_CREATED && type != HIL_REC_PROCESS_EXITED)
            || get16(r + 2) != HIL_PROCESS_BODY_FIXED + path_len || get16(r + 4) != 4
            || get16(r + 10) != 8 || get16(r + 20) != HIL_SHA256_LEN || path_len > HIL_MAX_PATH
            || len - off - HIL_PROCESS_PREFIX_LEN < path_len)
            return HIL_E_MALFORMED_RECORD;
        starts[n++] = bias + (hil_u32)off;
        off += HIL_PROCESS_PREFIX_LEN + path_len;
    }
    return (long)n;
}

long hil_index_process_records(const hil_u8 *payload, size_t len, hil_u32 *starts, size_t cap)
{
    long n;
    if (payload == NULL || starts == NULL || len > HIL_MAX_PAYLOAD)
        return HIL_E_INVALID_ARG;
    n = index_records(payload, len, starts, cap, 0);
    return n == HIL_E_NO_SPACE ? HIL_E_MALFORMED_RECORD : n;
}

long hil_split_frames(const hil_u8 *buf, size_t len, hil_u32 *frames, size_t frames_cap,
                      hil_u32 *starts, size_t starts_cap)
{
    size_t off = 0, nf = 0, ns = 0;
    if (buf == NULL || frames == NULL || starts == NULL)
        return HIL_E_INVALID_ARG;
    if (len > HIL_SPLIT_MAX_LEN)
        len = HIL_SPLIT_MAX_LEN; /* offsets are 32-bit: the caller splits the rest next */
    while (nf < frames_cap && len - off >= HIL_HEADER_LEN) {
        const hil_u8 *f = buf + off;
        hil_u32 length = get32(f + 4);
        hil_u32 count = HIL_SPLIT_UNINDEXED;
        if (f[0] != HIL_MAGIC0 || f[1] != HIL_MAGIC1 || f[2] != HIL_VERSION
            || f[3] < HIL_FRAME_HELLO || f[3] > HIL_FRAME_END || length > HIL_MAX_PAYLOAD)
            break; /* the caller decides and names the error */
        if (len - off - HIL_HEADER_LEN < length)
            break; /* incomplete */
        if (f[3] == HIL_FRAME_RECORDS) {
            long n = index_records(f + HIL_HEADER_LEN, length, starts + ns, starts_cap - ns,
                                   (hil_u32)(off + HIL_HEADER_LEN));
            if (n == HIL_E_NO_SPACE)
                break; /* the caller calls again with the room emptied */
            if (n >= 0) {
                count = (hil_u32)n;
                ns += (size_t)n;
            }
        }
        frames[4 * nf] = (hil_u32)off;
        frames[4 * nf + 1] = f[3];
        frames[4 * nf + 2] = length;
        frames[4 * nf + 3] = count;
        nf++;
        off += HIL_HEADER_LEN + length;
    }
    return (long)nf;
}

/* ---- encoding ---- */

int hil_encode_header(hil_u8 *buf, size_t cap, hil_u8 type, hil_u32 length)
{
    if (buf == NULL)
        return HIL_E_INVALID_ARG;
    if (type < HIL_FRAME_HELLO || type > HIL_FRAME_END || length > HIL_MAX_PAYLOAD)
        return HIL_E_INVALID_ARG;
    if (cap < HIL_HEADER_LEN)
        return HIL_E_NO_SPACE;
    buf[0] = (hil_u8)HIL_MAGIC0;
    buf[1] = (hil_u8)HIL_MAGIC1;
    buf[2] = (hil_u8)HIL_VERSION;
    buf[3] = type;
    put32(buf + 4, length);
    return (int)HIL_HEADER_LEN;
}

static size_t put_str16(hil_u8 *p, const hil_u8 *s, size_t n)
{
    put16(p, (hil_u16)n);
    copy_bytes(p + 2, s, n);
    return 2 + n;
}

int hil_encode_hello(hil_u8 *buf, size_t cap, const hil_u8 *kind, size_t kind_len,
                     const hil_u8 *os, size_t os_len, const hil_u8 *host, size_t host_len)
{
    return hil_encode_hello_token(buf, cap, kind, kind_len, os, os_len, host, host_len, NULL, 0);
}

int hil_encode_hello_token(hil_u8 *buf, size_t cap, const hil_u8 *kind, size_t kind_len,
                           const hil_u8 *os, size_t os_len, const hil_u8 *host, size_t host_len,
                           const hil_u8 *token, size_t token_len)
{
    size_t payload, off;
    if (buf == NULL || (kind == NULL && kind_len) || (os == NULL && os_len) ||
        (host == NULL && host_len) || (token == NULL && token_len))
        return HIL_E_INVALID_ARG;
    if (kind_len < 1 || kind_len > HIL_MAX_HELLO_STRING || os_len > HIL_MAX_HELLO_STRING ||
        host_len < 1 || host_len > HIL_MAX_HELLO_STRING || token_len > HIL_MAX_TOKEN)
        return HIL_E_INVALID_ARG;
    payload = 2 + 2 + kind_len + 2 + os_len + 2 + host_len + (token_len ? 2 + token_len : 0);
    if (cap < HIL_HEADER_LEN + payload)
        return HIL_E_NO_SPACE;
    hil_encode_header(buf, cap, HIL_FRAME_HELLO, (hil_u32)payload);
    off = HIL_HEADER_LEN;
    put16(buf + off, (hil_u16)HIL_VERSION);
    off += 2;
    off += put_str16(buf + off, kind, kind_len);
    off += put_str16(buf + off, os, os_len);
    off += put_str16(buf + off, host, host_len);
    if (token_len) /* none: the original HELLO, byte for byte */
        off += put_str16(buf + off, token, token_len);
    return (int)off;
}

int hil_encode_request(hil_u8 *buf, size_t cap, hil_u32 request_id)
{
    if (buf == NULL)
        return HIL_E_INVALID_ARG;
    if (cap < HIL_REQUEST_FRAME_LEN)
        return HIL_E_NO_SPACE;
    hil_encode_header(buf, cap, HIL_FRAME_REQUEST, 4);
    put32(buf + HIL_HEADER_LEN, request_id);
    return (int)HIL_REQUEST_FRAME_LEN;
}

int hil_encode_end(hil_u8 *buf, size_t cap, hil_u32 request_id, hil_u32 count,
                   hil_u32 dropped)
{
    if (buf == NULL)
        return HIL_E_INVALID_ARG;
    if (cap < HIL_END_FRAME_LEN)
        return HIL_E_NO_SPACE;
    hil_encode_header(buf, cap, HIL_FRAME_END, 12);
    put32(buf + HIL_HEADER_LEN, request_id);
    put32(buf + HIL_HEADER_LEN + 4, count);
    put32(buf + HIL_HEADER_LEN + 8, dropped);
    return (int)HIL_END_FRAME_LEN;
}

int hil_encode_process_record(hil_u8 *buf, size_t cap, hil_u16 type, hil_u32 pid,
                              hil_u64 image_size, const hil_u8 *sha256,
                              const hil_u8 *path, size_t path_len)
{
    size_t i, total;
    if (buf == NULL || (path == NULL && path_len))
        return HIL_E_INVALID_ARG;
    if ((type != HIL_REC_PROCESS_CREATED && type != HIL_REC_PROCESS_EXITED) ||
        path_len > HIL_MAX_PATH)
        return HIL_E_INVALID_ARG;
    total = HIL_PROCESS_PREFIX_LEN + path_len;
    if (cap < total)
        return HIL_E_NO_SPACE;
    put16(buf, type);
    put16(buf + 2, (hil_u16)(HIL_PROCESS_BODY_FIXED + path_len));
    put16(buf + 4, 4);
    put32(buf + 6, pid);
    put16(buf + 10, 8);
    put64(buf + 12, image_size);
    put16(buf + 20, HIL_SHA256_LEN);
    for (i = 0; i < HIL_SHA256_LEN; i++)
        buf[22 + i] = sha256 ? sha256[i] : 0;
    put16(buf + 54, (hil_u16)path_len);
    copy_bytes(buf + HIL_PROCESS_PREFIX_LEN, path, path_len);
    return (int)total;
}

int hil_records_begin(struct hil_records_builder *b, hil_u8 *buf, size_t cap)
{
    if (b == NULL || buf == NULL)
        return HIL_E_INVALID_ARG;
    if (cap < HIL_HEADER_LEN)
        return HIL_E_NO_SPACE;
    b->buf = buf;
    b->cap = cap < HIL_MAX_FRAME ? cap : HIL_MAX_FRAME;
    b->len = HIL_HEADER_LEN;
    b->count = 0;
    return HIL_OK;
}

int hil_records_append(struct hil_records_builder *b, const hil_u8 *record, size_t record_len)
{
    if (b == NULL || b->buf == NULL || record == NULL || record_len < HIL_RECORD_HEADER_LEN)
        return HIL_E_INVALID_ARG;
    if ((size_t)get16(record + 2) + HIL_RECORD_HEADER_LEN != record_len)
        return HIL_E_INVALID_ARG; /* not exactly one whole record */
    if (b->cap - b->len < record_len)
        return HIL_E_NO_SPACE;
    copy_bytes(b->buf + b->len, record, record_len);
    b->len += record_len;
    b->count++;
    return HIL_OK;
}

int hil_records_fill(struct hil_records_builder *b, const hil_u8 *saved, size_t saved_len,
                     size_t *off)
{
    int n = 0;
    if (b == NULL || b->buf == NULL || saved == NULL || off == NULL || *off > saved_len)
        return HIL_E_INVALID_ARG;
    while (*off < saved_len) {
        size_t left = saved_len - *off;
        size_t rec_len;
        if (left < HIL_RECORD_HEADER_LEN)
            return HIL_E_MALFORMED_RECORD;
        rec_len = HIL_RECORD_HEADER_LEN + get16(saved + *off + 2);
        if (rec_len > left)
            return HIL_E_MALFORMED_RECORD;
        if (b->cap - b->len < rec_len)
            break; /* frame full: finish it, begin another, call again */
        copy_bytes(b->buf + b->len, saved + *off, rec_len);
        b->len += rec_len;
        b->count++;
        *off += rec_len;
        n++;
    }
    return n;
}

int hil_records_finish(struct hil_records_builder *b)
{
    if (b == NULL || b->buf == NULL || b->len < HIL_HEADER_LEN)
        return HIL_E_INVALID_ARG;
    hil_encode_header(b->buf, b->cap, HIL_FRAME_RECORDS, (hil_u32)(b->len - HIL_HEADER_LEN));
    return (int)b->len;
}

const char *hil_strerror_name(int code)
{
    switch (code) {
    case HIL_OK: return "OK";
    case HIL_E_NEED_MORE: return "NeedMore";
    case HIL_E_BAD_MAGIC: return "BadMagic";
    case HIL_E_UNSUPPORTED_VERSION: return "UnsupportedVersion";
    case HIL_E_UNKNOWN_FRAME_TYPE: return "UnknownFrameType";
    case HIL_E_FRAME_TOO_LARGE: return "FrameTooLarge";
    case HIL_E_MALFORMED_FRAME: return "MalformedFrame";
    case HIL_E_MALFORMED_RECORD: return "MalformedRecord";
    case HIL_E_TRUNCATED_FRAME: return "TruncatedFrame";
    case HIL_E_NO_SPACE: return "NoSpace";
    case HIL_E_INVALID_ARG: return "InvalidArgument";
    default: return "Unknown";
    }
}
