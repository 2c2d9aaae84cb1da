/*
 * store - the agent's saved records, kept in the wire encoding (PROTOCOL.md section 4) in one
 * fixed non-paged buffer: answering a REQUEST copies whole records, nothing is allocated at
 * send time.  A record that does not fit is dropped and counted for the next END.
 * All functions run at PASSIVE_LEVEL (the lock is a KMUTEX).
 */
#ifndef HIL_AGENT_STORE_H
#define HIL_AGENT_STORE_H

#include <ntddk.h>
#include "../common/hilkm.h"

typedef struct _HIL_STORE {
    HIL_LOCK Lock;
    PUCHAR Buf;
    ULONG Cap;
    ULONG Len;
    ULONG Count;
    ULONGLONG Oldest;   /* KeQueryInterruptTime() when the oldest saved record arrived */
    ULONG Dropped;      /* records dropped since the last successful END */
} HIL_STORE;

NTSTATUS HilStoreInit(HIL_STORE *s, ULONG cap);
VOID HilStoreFree(HIL_STORE *s);
/* Appends one encoded record; returns FALSE (and counts a drop) when it does not fit. */
BOOLEAN HilStoreAppend(HIL_STORE *s, const UCHAR *rec, ULONG len);
VOID HilStoreCountDrop(HIL_STORE *s, ULONG n);
/* Moves everything into out (cap >= s->Cap) and empties the store. */
ULONG HilStoreTake(HIL_STORE *s, PUCHAR out, ULONG *count, ULONGLONG *oldest, ULONG *dropped);
/* Puts back records taken earlier (they are older than anything saved since): they go first;
 * newer records that no longer fit are dropped and counted. */
VOID HilStorePutBack(HIL_STORE *s, const UCHAR *data, ULONG len, ULONG count, ULONGLONG oldest,
                     ULONG dropped);
/* Age in milliseconds of the oldest saved record, 0 when empty. */
ULONG HilStoreOldestAgeMs(HIL_STORE *s);
ULONG HilStoreCount(HIL_STORE *s);

/* Size of the whole record starting at p (header + body), 0 if fewer than 4 bytes or the body
 * runs past len. */
ULONG HilRecordSize(const UCHAR *p, ULONG len);

#endif
