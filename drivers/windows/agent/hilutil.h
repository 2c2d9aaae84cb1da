/*
 * hilutil - portable helpers of the Windows agent with no kernel dependency, so the host
 * test suite can compile and check them with the host compiler (tests/drivers).
 *   - SHA-256 (FIPS 180-4): ksecdd's BCrypt is a stub under Wine, and a driver-owned
 *     implementation behaves the same everywhere.
 *   - UTF-16LE -> UTF-8 with truncation at a character boundary (protocol paths are UTF-8).
 */
#ifndef HIL_HILUTIL_H
#define HIL_HILUTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct hil_sha256 {
    uint32_t state[8];
    uint64_t total;      /* bytes hashed */
    uint8_t block[64];
    size_t used;         /* bytes in block */
} hil_sha256;

void hil_sha256_init(hil_sha256 *ctx);
void hil_sha256_update(hil_sha256 *ctx, const void *data, size_t len);
void hil_sha256_final(hil_sha256 *ctx, uint8_t digest[32]);

/*
 * Converts len16 UTF-16 code units to UTF-8 into out (cap bytes).  Stops before a character
 * that would not fit (never splits one).  Unpaired surrogates become U+FFFD.  Returns the
 * number of bytes written.
 */
size_t hil_utf16_to_utf8(const uint16_t *in, size_t len16, uint8_t *out, size_t cap);

#endif
