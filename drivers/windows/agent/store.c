#include "store.h"

#define STORE_TAG 'tSlH'

ULONG HilRecordSize(const UCHAR *p, ULONG len)
{
    ULONG body;
    if (len < 4)
        return 0;
    body = (ULONG)p[2] | ((ULONG)p[3] << 8);
    if (4 + body > len)
        return 0;
    return 4 + body;
}

NTSTATUS HilStoreInit(HIL_STORE *s, ULONG cap)
{
    RtlZeroMemory(s, sizeof(*s));
    HilLockInit(&s->Lock);
    s->Buf = (PUCHAR)ExAllocatePoolWithTag(NonPagedPool, cap, STORE_TAG);
    if (s->Buf == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    s->Cap = cap;
    return STATUS_SUCCESS;
}

VOID HilStoreFree(HIL_STORE *s)
{
    if (s->Buf)
        ExFreePoolWithTag(s->Buf, STORE_TAG);
    s->Buf = NULL;
}

BOOLEAN HilStoreAppend(HIL_STORE *s, const UCHAR *rec, ULONG len)
{
    BOOLEAN ok = FALSE;

    HilLock(&s->Lock);
    if (len <= s->Cap - s->Len) {
        if (s->Len == 0)
            s->Oldest = KeQueryInterruptTime();
        RtlCopyMemory(s->Buf + s->Len, rec, len);
        s->Len += len;
        s->Count++;
        ok = TRUE;
    } else {
        s->Dropped++;
    }
    HilUnlock(&s->Lock);
    return ok;
}

VOID HilStoreCountDrop(HIL_STORE *s, ULONG n)
{
    HilLock(&s->Lock);
    s->Dropped += n;
    HilUnlock(&s->Lock);
}

ULONG HilStoreTake(HIL_STORE *s, PUCHAR out, ULONG *count, ULONGLONG *oldest, ULONG *dropped)
{
    ULONG len;

    HilLock(&s->Lock);
    len = s->Len;
    RtlCopyMemory(out, s->Buf, len);
    *count = s->Count;
    *oldest = s->Oldest;
    *dropped = s->Dropped;
    s->Len = 0;
    s->Count = 0;
    s->Dropped = 0;
    HilUnlock(&s->Lock);
    return len;
}

VOID HilStorePutBack(HIL_STORE *s, const UCHAR *data, ULONG len, ULONG count, ULONGLONG oldest,
                     ULONG dropped)
{
    ULONG keep = 0, kept = 0, off = 0;

    HilLock(&s->Lock);
    s->Dropped += dropped;
    if (len == 0) {
        HilUnlock(&s->Lock);
        return;
    }
    /* Keep the newer records (already in Buf) that still fit after the older ones. */
    while (off < s->Len) {
        ULONG n = HilRecordSize(s->Buf + off, s->Len - off);
        if (n == 0 || len + keep + n > s->Cap)
            break;
        keep += n;
        kept++;
        off += n;
    }
    s->Dropped += s->Count - kept;
    RtlMoveMemory(s->Buf + len, s->Buf, keep);
    RtlCopyMemory(s->Buf, data, len); /* len <= Cap: it came out of this store */
    s->Len = len + keep;
    s->Count = count + kept;
    s->Oldest = oldest;
    HilUnlock(&s->Lock);
}

ULONG HilStoreOldestAgeMs(HIL_STORE *s)
{
    ULONG age = 0;

    HilLock(&s->Lock);
    if (s->Len > 0)
        age = (ULONG)((KeQueryInterruptTime() - s->Oldest) / 10000ULL);
    HilUnlock(&s->Lock);
    return age;
}

ULONG HilStoreCount(HIL_STORE *s)
{
    ULONG n;
    HilLock(&s->Lock);
    n = s->Count;
    HilUnlock(&s->Lock);
    return n;
}
