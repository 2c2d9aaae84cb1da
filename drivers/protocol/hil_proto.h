/*
 * kernel-hil agent wire protocol v1: C codec (spec: PROTOCOL.md in this directory).
 *
 * Portable freestanding C99: no allocation, no libc calls, every read and write
 * bounds-checked against the length the caller gives. Builds unchanged in
 *   - a Linux kernel module          (__KERNEL__ defined: <linux/types.h>)
 *   - a Windows kernel driver        (MSVC or mingw-w64; <stdint.h>/<stddef.h> are freestanding)
 *   - a host userspace program       (<stdint.h>/<stddef.h>)
 * Define HIL_PROTO_NO_STDINT and provide the hil_u* types and size_t yourself if none fits.
 *
 * Conventions: encoders write into a caller-owned buffer of `cap` bytes and return the number of
 * bytes written (> 0) or a negative HIL_E_* code; nothing is written past `cap`. Decoders return
 * HIL_OK (0) or a negative HIL_E_* code and never read past `len`. Pointers in decoded structs
 * point into the caller's buffer (zero copy).
 */
#ifndef HIL_PROTO_H
#define HIL_PROTO_H

/* ---- compat block: fixed-width types ---- */
#if defined(HIL_PROTO_NO_STDINT)
/* caller provides hil_u8, hil_u16, hil_u32, hil_u64 and size_t */
#elif defined(__KERNEL__) && defined(__linux__)
#include <linux/types.h>
typedef u8 hil_u8;
typedef u16 hil_u16;
typedef u32 hil_u32;
typedef u64 hil_u64;
#else
#include <stddef.h>
#include <stdint.h>
typedef uint8_t hil_u8;
typedef uint16_t hil_u16;
typedef uint32_t hil_u32;
typedef uint64_t hil_u64;
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- constants ---- */
#define HIL_MAGIC0 0x4Bu /* 'K' */
#define HIL_MAGIC1 0x48u /* 'H' */
#define HIL_VERSION 1u
#define HIL_HEADER_LEN 8u
#define HIL_MAX_FRAME 65536u
#define HIL_MAX_PAYLOAD (HIL_MAX_FRAME - HIL_HEADER_LEN)
#define HIL_MAX_PATH 4096u
#define HIL_MAX_HELLO_STRING 255u
#define HIL_MAX_TOKEN 255u /* HELLO's optional shared token, opaque bytes */
#define HIL_SHA256_LEN 32u
#define HIL_RECORD_HEADER_LEN 4u
#define HIL_PROCESS_PREFIX_LEN 56u /* record header + pid + image_size + sha256 + path length */
#define HIL_PROCESS_BODY_FIXED 52u
#define HIL_PROCESS_RECORD_MAX (HIL_PROCESS_PREFIX_LEN + HIL_MAX_PATH)
#define HIL_REQUEST_FRAME_LEN (HIL_HEADER_LEN + 4u)
#define HIL_END_FRAME_LEN (HIL_HEADER_LEN + 12u)
#define HIL_HELLO_FRAME_MAX \
    (HIL_HEADER_LEN + 2u + 3u * (2u + HIL_MAX_HELLO_STRING) + 2u + HIL_MAX_TOKEN)

enum hil_frame_type {
    HIL_FRAME_HELLO = 1,
    HIL_FRAME_REQUEST = 2,
    HIL_FRAME_RECORDS = 3,
    HIL_FRAME_END = 4
};

enum hil_record_type {
    HIL_REC_PROCESS_CREATED = 1,
    HIL_REC_PROCESS_EXITED = 2
};

enum hil_status {
    HIL_OK = 0,
    HIL_E_NEED_MORE = -1,           /* not an error yet: the frame is incomplete */
    HIL_E_BAD_MAGIC = -2,           /* BadMagic */
    HIL_E_UNSUPPORTED_VERSION = -3, /* UnsupportedVersion */
    HIL_E_UNKNOWN_FRAME_TYPE = -4,  /* UnknownFrameType */
    HIL_E_FRAME_TOO_LARGE = -5,     /* FrameTooLarge */
    HIL_E_MALFORMED_FRAME = -6,     /* MalformedFrame */
    HIL_E_MALFORMED_RECORD = -7,    /* MalformedRecord */
    HIL_E_TRUNCATED_FRAME = -8,     /* TruncatedFrame (stream ended with HIL_E_NEED_MORE) */
    HIL_E_NO_SPACE = -9,            /* encoder: output buffer too small / frame full */
    HIL_E_INVALID_ARG = -10         /* encoder: argument out of protocol bounds */
};

struct hil_frame_header {
    hil_u8 version;
    hil_u8 type;
    hil_u32 length; /* payload length */
};

struct hil_str {
    const hil_u8 *ptr; /* UTF-8, not NUL-terminated */
    hil_u16 len;
};

struct hil_hello {
    hil_u16 protocol_version;
    struct hil_str kind;
    struct hil_str os;
    struct hil_str host;
    struct hil_str token; /* opaque bytes; len 0 when the agent sent none */
};

struct hil_end {
    hil_u32 request_id;
    hil_u32 count;
    hil_u32 dropped;
};

struct hil_process_record {
    hil_u32 pid;
    hil_u64 image_size;
    const hil_u8 *sha256; /* HIL_SHA256_LEN bytes */
    const hil_u8 *path;   /* UTF-8, path_len bytes */
    hil_u16 path_len;
};

struct hil_record {
    hil_u16 type;
    hil_u16 body_len;
    const hil_u8 *body;
    const hil_u8 *raw;              /* the whole record (header + body) */
    hil_u32 raw_len;
    struct hil_process_record proc; /* valid when type is a process record type */
};

/* ---- decoding ---- */

/* Validate the 8-byte header at buf. HIL_E_NEED_MORE if len < 8. */
int hil_decode_header(const hil_u8 *buf, size_t len, struct hil_frame_header *out);

/* Size of the complete frame starting at buf (> 0), HIL_E_NEED_MORE, or a header error. */
int hil_frame_size(const hil_u8 *buf, size_t len);

int hil_decode_hello(const hil_u8 *payload, size_t len, struct hil_hello *out);
int hil_decode_request(const hil_u8 *payload, size_t len, hil_u32 *request_id);
int hil_decode_end(const hil_u8 *payload, size_t len, struct hil_end *out);

/*
 * Iterate the records of a RECORDS payload: start with *off = 0; returns 1 and fills *out
 * when a record was decoded (unknown types too: check out->type), 0 at the end of the
 * payload, or HIL_E_MALFORMED_RECORD.
 */
int hil_next_record(const hil_u8 *payload, size_t len, size_t *off, struct hil_record *out);

/*
 * For a host that keeps records raw: in one pass, store the payload offset of each record in
 * starts[] (at most cap) when the payload holds only process records of exactly the v1 size
 * (no trailing fields) that hil_next_record accepts. Returns how many (>= 0), or
 * HIL_E_MALFORMED_RECORD when any record is not such a record (an unknown type, trailing
 * fields, an error) or there are more than cap: the caller then walks the payload with
 * hil_next_record, which decides and names the problem.
 */
long hil_index_process_records(const hil_u8 *payload, size_t len, hil_u32 *starts, size_t cap);

/*
 * For a host that reads the stream in large chunks (the collector): split buf[0..len) into
 * whole frames in one pass, indexing RECORDS payloads as hil_index_process_records does. For
 * each whole frame with a valid header, writes four u32 to frames[]: its offset in buf, its
 * type, its payload length, and, for a RECORDS frame that hil_index_process_records accepts,
 * the number of records, whose offsets *in buf* it appends to starts[] (frame after frame),
 * else HIL_SPLIT_UNINDEXED (any other frame, or a payload the caller must walk with
 * hil_next_record). Stops before an incomplete frame, before a header that hil_decode_header
 * refuses (the caller decides and names the error), when frames_cap frames are written, when
 * starts[] has no room for a payload's records, and at HIL_SPLIT_MAX_LEN bytes. Returns the
 * number of frames (>= 0; the bytes consumed end where the last frame does).
 */
#define HIL_SPLIT_UNINDEXED 0xFFFFFFFFu
#define HIL_SPLIT_MAX_LEN 0x7FFFFFFFu
long hil_split_frames(const hil_u8 *buf, size_t len, hil_u32 *frames, size_t frames_cap,
                      hil_u32 *starts, size_t starts_cap);

/* ---- encoding ---- */

int hil_encode_header(hil_u8 *buf, size_t cap, hil_u8 type, hil_u32 length);
int hil_encode_hello(hil_u8 *buf, size_t cap, const hil_u8 *kind, size_t kind_len,
                     const hil_u8 *os, size_t os_len, const hil_u8 *host, size_t host_len);
/* The same with the optional shared token (PROTOCOL.md 3.1): token_len <= HIL_MAX_TOKEN;
 * token_len 0 writes exactly what hil_encode_hello writes. */
int hil_encode_hello_token(hil_u8 *buf, size_t cap, const hil_u8 *kind, size_t kind_len,
                           const hil_u8 *os, size_t os_len, const hil_u8 *host, size_t host_len,
                           const hil_u8 *token, size_t token_len);
int hil_encode_request(hil_u8 *buf, size_t cap, hil_u32 request_id);
int hil_encode_end(hil_u8 *buf, size_t cap, hil_u32 request_id, hil_u32 count,
                   hil_u32 dropped);
/* sha256 may be NULL (encoded as 32 zero bytes). path_len <= HIL_MAX_PATH. */
int hil_encode_process_record(hil_u8 *buf, size_t cap, hil_u16 type, hil_u32 pid,
                              hil_u64 image_size, const hil_u8 *sha256,
                              const hil_u8 *path, size_t path_len);

/*
 * RECORDS frame builder over a caller buffer (typically HIL_MAX_FRAME bytes, static or
 * preallocated): begin, append whole encoded records until HIL_E_NO_SPACE, finish (writes the
 * header, returns the frame length).
 */
struct hil_records_builder {
    hil_u8 *buf;
    size_t cap;
    size_t len;
    hil_u32 count;
};

int hil_records_begin(struct hil_records_builder *b, hil_u8 *buf, size_t cap);
int hil_records_append(struct hil_records_builder *b, const hil_u8 *record, size_t record_len);
int hil_records_finish(struct hil_records_builder *b);

/*
 * For an agent that keeps its saved records in wire encoding in one buffer (PROTOCOL.md 4):
 * append whole records from saved[*off..saved_len) to the frame until the next one does not
 * fit; advances *off. Returns the number of records appended (0 when the frame is full or
 * nothing is left), or HIL_E_MALFORMED_RECORD if the saved buffer is corrupt at *off.
 */
int hil_records_fill(struct hil_records_builder *b, const hil_u8 *saved, size_t saved_len,
                     size_t *off);

/* The error class name shared with the Python codec ("BadMagic", ...), or "OK". */
const char *hil_strerror_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* HIL_PROTO_H */
