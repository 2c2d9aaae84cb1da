/*
 * hilagent.sys - process-creation agent speaking the kernel-hil protocol (drivers/protocol).
 *
 * Threads and who owns what:
 *   notify callback  PsSetCreateProcessNotifyRoutineEx: references the image's file object
 *                    (PS_CREATE_NOTIFY_INFO.FileObject), copies PID/created/image path into a
 *                    small event, queues it, signals the worker.  Nothing else (no file I/O,
 *                    no hashing, no waiting).  The queue holds at most MAX_PENDING_EVENTS
 *                    events and MAX_PENDING_BYTES of non-paged pool; beyond, events are
 *                    dropped and counted for the next END.
 *   worker thread    turns events into protocol records (size + SHA-256 of the image read
 *                    through that file object, never by opening its path again: the path may
 *                    name another file by then; our own SHA-256), saves them in the store, and
 *                    appends the store to the spill file when its oldest record has waited
 *                    SpillAfterMs (a failed or short append is cut off again: no torn record).
 *   network thread   connects to the collector (backoff on failure), says HELLO, answers each
 *                    REQUEST with every saved record (spill file first, then memory) + END.
 *                    The spill file is renamed to .sending under the spill lock and sent
 *                    without it, so a slow collector never holds up the worker.
 *                    Records leave the agent only when the END was sent; on any failure they
 *                    go back to the store (at-least-once delivery, never silent loss).
 *
 * Parameters (REG_DWORD under the service key's Parameters): CollectorIp (host order,
 * default 127.0.0.1), CollectorPort (default 7171), SpillAfterMs (default 300000),
 * BackoffMaxMs (default 5000), SpillId (spill file \SystemRoot\hilagent-<id>.spill, renamed
 * hilagent-<id>.sending while its records are being sent; default 0).
 * Token (REG_SZ, sent as UTF-8, or REG_BINARY, sent as is; 0..255 bytes; default none): the
 * collector's shared secret, sent in HELLO (PROTOCOL.md 3.1); restrict the Parameters key's
 * ACL to administrators and SYSTEM where unprivileged users must not learn it.
 *
 * HIL_TEST_BUILD adds \Device\HilAgentTest with IOCTL_HILAGENT_INJECT, which feeds synthetic
 * notifications into the same queue (Wine never calls process-notify routines).  It does not
 * exist in release builds.
 */
#include <ntddk.h>
#include "../ksock/ksock.h"
#include "../common/hilkm.h"
#include "hil_proto.h"
#include "hilutil.h"
#include "store.h"
#ifdef HIL_TEST_BUILD
#include "hilagent_ioctl.h"
#endif

/* ntifs.h declares these; the rest of ntifs.h is not needed here. */
NTSYSAPI NTSTATUS NTAPI ZwDeleteFile(POBJECT_ATTRIBUTES ObjectAttributes);
NTSYSAPI NTSTATUS NTAPI ZwCreateEvent(PHANDLE EventHandle, ACCESS_MASK DesiredAccess,
                                      POBJECT_ATTRIBUTES ObjectAttributes, EVENT_TYPE EventType,
                                      BOOLEAN InitialState);
NTSYSAPI NTSTATUS NTAPI ZwWaitForSingleObject(HANDLE Handle, BOOLEAN Alertable,
                                              PLARGE_INTEGER Timeout);
NTKERNELAPI NTSTATUS NTAPI ObOpenObjectByPointer(PVOID Object, ULONG HandleAttributes,
                                                 PACCESS_STATE PassedAccessState,
                                                 ACCESS_MASK DesiredAccess,
                                                 POBJECT_TYPE ObjectType,
                                                 KPROCESSOR_MODE AccessMode, PHANDLE Handle);

/*
 * The object type of files.  mingw-w64 declares IoFileObjectType dllimport, so the name itself
 * reads ntoskrnl's exported variable (its '*' would dereference once too often, as hilkm.c
 * notes for PsThreadType); the WDK's declaration needs the '*'.
 */
#ifdef __MINGW32__
#define HIL_FILE_OBJECT_TYPE ((POBJECT_TYPE)IoFileObjectType)
#else
#define HIL_FILE_OBJECT_TYPE (*IoFileObjectType)
#endif

/* FILE_RENAME_INFORMATION (ntifs.h) with room for the spill file's name. */
typedef struct _HIL_RENAME_INFO {
    BOOLEAN ReplaceIfExists;
    HANDLE RootDirectory;
    ULONG FileNameLength;
    WCHAR FileName[64];
} HIL_RENAME_INFO;

#define TAG "hilagent"
#define POOL_TAG 'gAlH'
#define STORE_CAP (256 * 1024)
#define IO_CHUNK (64 * 1024)
#define MAX_PENDING_EVENTS 4096
#define MAX_PENDING_BYTES (1024 * 1024) /* non-paged pool held by queued events, at most */
#define MAX_HASH_BYTES (256ULL * 1024 * 1024)
#define MAX_SPILL_BYTES (16UL * 1024 * 1024)
#define SEND_TIMEOUT_MS 15000
#define CONNECT_TIMEOUT_MS 5000
#define PAYLOAD_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 100
#define MAX_REQUEST_PAYLOAD 1024
#define AGENT_KIND "win-wdm"

typedef struct _HIL_EVENT {
    LIST_ENTRY Link;
    BOOLEAN Created;
    ULONG Pid;
    ULONG Bytes;            /* this allocation, counted in g_event_bytes */
    HANDLE Image;           /* created: kernel handle to the image's file object, or NULL */
    USHORT PathBytes;       /* the path as the record carries it (HIL_MAX_PATH units at most) */
    WCHAR Path[1];
} HIL_EVENT, *PHIL_EVENT;

/* configuration */
static ULONG g_ip;
static USHORT g_port;
static ULONG g_spill_after_ms;
static ULONG g_backoff_max_ms;
static UNICODE_STRING g_spill_path;
static WCHAR g_spill_path_buf[64];
static UNICODE_STRING g_sending_path; /* the spill file while a batch is being sent */
static WCHAR g_sending_path_buf[64];
static UCHAR g_os[64];
static ULONG g_os_len;
static UCHAR g_host[HIL_MAX_HELLO_STRING];
static ULONG g_host_len;
static UCHAR g_token[HIL_MAX_TOKEN];
static ULONG g_token_len;

/* state */
static HIL_STORE g_store;
static KEVENT g_stop;               /* notification */
static KEVENT g_work;               /* synchronization */
static volatile LONG g_stopping;
static LIST_ENTRY g_events;
static KSPIN_LOCK g_events_lock;
static LONG g_event_count;
static LONG g_event_bytes;
static HIL_LOCK g_sock_lock;
static PKSOCK g_sock;               /* current connection, guarded by g_sock_lock */
static HIL_LOCK g_spill_lock;       /* serialises the store's cut and the spill file's name and
                                       appends; the .sending file is the network thread's */
static PETHREAD g_net_thread;
static PETHREAD g_worker_thread;
static BOOLEAN g_notify_registered;
static BOOLEAN g_wsk_started;

/* buffers owned by one thread each */
static PUCHAR g_send_buf;           /* network: records taken from the store (STORE_CAP) */
static PUCHAR g_frame;              /* network: frame being built / received (HIL_MAX_FRAME) */
static PUCHAR g_spill_rd;           /* network: spill file reading (IO_CHUNK) */
static PUCHAR g_spill_wr;           /* worker: store contents being spilled (STORE_CAP) */
static PUCHAR g_hash_buf;           /* worker: image reading (IO_CHUNK) */
static PUCHAR g_rec;                /* worker: record being encoded (HIL_PROCESS_RECORD_MAX) */
static PUCHAR g_path8;              /* worker: UTF-8 path (HIL_MAX_PATH) */

#ifdef HIL_TEST_BUILD
static PDEVICE_OBJECT g_device;
static UNICODE_STRING g_dos_name;
static BOOLEAN g_link_created;
#endif

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                              */

static ULONG AppendDecimal(UCHAR *out, ULONG pos, ULONG cap, ULONG v)
{
    UCHAR tmp[10];
    ULONG n = 0;
    do {
        tmp[n++] = (UCHAR)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof(tmp));
    while (n > 0 && pos < cap)
        out[pos++] = tmp[--n];
    return pos;
}

static ULONG AppendText(UCHAR *out, ULONG pos, ULONG cap, const char *s)
{
    while (*s && pos < cap)
        out[pos++] = (UCHAR)*s++;
    return pos;
}

static VOID InitIdentity(VOID)
{
    RTL_OSVERSIONINFOW v;
    UNICODE_STRING key_path, value_name;
    OBJECT_ATTRIBUTES oa;
    HANDLE key;
    ULONG len;
    UCHAR buf[sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 2 * 128];
    PKEY_VALUE_PARTIAL_INFORMATION info = (PKEY_VALUE_PARTIAL_INFORMATION)buf;

    RtlZeroMemory(&v, sizeof(v));
    v.dwOSVersionInfoSize = sizeof(v);
    g_os_len = AppendText(g_os, 0, sizeof(g_os), "windows-");
    if (NT_SUCCESS(RtlGetVersion(&v))) {
        g_os_len = AppendDecimal(g_os, g_os_len, sizeof(g_os), v.dwMajorVersion);
        g_os_len = AppendText(g_os, g_os_len, sizeof(g_os), ".");
        g_os_len = AppendDecimal(g_os, g_os_len, sizeof(g_os), v.dwMinorVersion);
        g_os_len = AppendText(g_os, g_os_len, sizeof(g_os), ".");
        g_os_len = AppendDecimal(g_os, g_os_len, sizeof(g_os), v.dwBuildNumber);
    } else {
        g_os_len = AppendText(g_os, g_os_len, sizeof(g_os), "unknown");
    }

    g_host_len = 0;
    RtlInitUnicodeString(&key_path,
        L"\\Registry\\Machine\\System\\CurrentControlSet\\Control\\ComputerName\\ComputerName");
    InitializeObjectAttributes(&oa, &key_path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL,
                               NULL);
    if (NT_SUCCESS(ZwOpenKey(&key, KEY_READ, &oa))) {
        RtlInitUnicodeString(&value_name, L"ComputerName");
        if (NT_SUCCESS(ZwQueryValueKey(key, &value_name, KeyValuePartialInformation, info,
                                       sizeof(buf), &len)) &&
            info->Type == REG_SZ) {
            ULONG chars = info->DataLength / sizeof(WCHAR);
            const uint16_t *w = (const uint16_t *)info->Data;
            while (chars > 0 && w[chars - 1] == 0)
                chars--;
            g_host_len = (ULONG)hil_utf16_to_utf8(w, chars, g_host, sizeof(g_host));
        }
        ZwClose(key);
    }
    if (g_host_len == 0)
        g_host_len = AppendText(g_host, 0, sizeof(g_host), "unknown-host");
}

/* Token from <registry_path>\Parameters: absent = none; REG_SZ (UTF-8 on the wire) or
 * REG_BINARY (as is) of at most HIL_MAX_TOKEN bytes, anything else fails the load (an agent
 * that silently sends no token would only be refused by the collector). */
static NTSTATUS ReadToken(PCUNICODE_STRING registry_path)
{
    UNICODE_STRING value_name;
    HANDLE key = NULL;
    static UCHAR buf[sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 2 * (HIL_MAX_TOKEN + 1)];
    static UCHAR utf8[3 * (HIL_MAX_TOKEN + 1)]; /* DriverEntry only: off the stack */
    PKEY_VALUE_PARTIAL_INFORMATION info = (PKEY_VALUE_PARTIAL_INFORMATION)buf;
    ULONG len, n;
    NTSTATUS status;

    g_token_len = 0;
    status = HilOpenParameters(registry_path, &key);
    if (status == STATUS_INSUFFICIENT_RESOURCES)
        return status;
    if (!NT_SUCCESS(status))
        return STATUS_SUCCESS; /* no Parameters key: no token */
    RtlInitUnicodeString(&value_name, L"Token");
    status = ZwQueryValueKey(key, &value_name, KeyValuePartialInformation, info, sizeof(buf),
                             &len);
    ZwClose(key);
    if (status == STATUS_OBJECT_NAME_NOT_FOUND)
        return STATUS_SUCCESS;
    if (status == STATUS_BUFFER_OVERFLOW || status == STATUS_BUFFER_TOO_SMALL) {
        HIL_LOG(TAG, "Token setting is longer than %u bytes", (unsigned)HIL_MAX_TOKEN);
        return STATUS_INVALID_PARAMETER;
    }
    if (!NT_SUCCESS(status))
        return status;
    if (info->Type == REG_BINARY && info->DataLength <= HIL_MAX_TOKEN) {
        RtlCopyMemory(g_token, info->Data, info->DataLength);
        g_token_len = info->DataLength;
        return STATUS_SUCCESS;
    }
    if (info->Type == REG_SZ) {
        ULONG chars = info->DataLength / sizeof(WCHAR);
        const uint16_t *w = (const uint16_t *)info->Data;
        while (chars > 0 && w[chars - 1] == 0)
            chars--;
        n = (ULONG)hil_utf16_to_utf8(w, chars, utf8, sizeof(utf8));
        if (n <= HIL_MAX_TOKEN) {
            RtlCopyMemory(g_token, utf8, n);
            g_token_len = n;
            return STATUS_SUCCESS;
        }
    }
    HIL_LOG(TAG, "Token setting must be REG_SZ or REG_BINARY of at most %u bytes (type %lu)",
            (unsigned)HIL_MAX_TOKEN, (unsigned long)info->Type);
    return STATUS_INVALID_PARAMETER;
}

/* Spill file: <windows dir>\hilagent-<id>.spill.  \SystemRoot is the Windows directory on
 * Windows; Wine 8.0 has no \SystemRoot link, so fall back to \??\C:\windows. */
static BOOLEAN DirectoryExists(PCWSTR dir)
{
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;
    HANDLE h;

    RtlInitUnicodeString(&name, dir);
    InitializeObjectAttributes(&oa, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    if (!NT_SUCCESS(ZwCreateFile(&h, FILE_LIST_DIRECTORY | SYNCHRONIZE, &oa, &iosb, NULL, 0,
                                 FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN,
                                 FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT, NULL, 0)))
        return FALSE;
    ZwClose(h);
    return TRUE;
}

static VOID InitSpillPath(ULONG spill_id)
{
    static const PCWSTR dirs[] = {L"\\SystemRoot", L"\\??\\C:\\windows"};
    static const WCHAR ext[] = L".spill";
    static const WCHAR sending_ext[] = L".sending";
    static const WCHAR stem[] = L"\\hilagent-";
    PCWSTR dir = dirs[0];
    UCHAR digits[12];
    ULONG n, i, pos = 0, base;

    if (!DirectoryExists(dirs[0]) && DirectoryExists(dirs[1]))
        dir = dirs[1];
    for (i = 0; dir[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = dir[i];
    for (i = 0; stem[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = stem[i];
    n = AppendDecimal(digits, 0, sizeof(digits), spill_id);
    for (i = 0; i < n; i++)
        g_spill_path_buf[pos++] = digits[i];
    base = pos;
    RtlCopyMemory(g_sending_path_buf, g_spill_path_buf, base * sizeof(WCHAR));
    for (i = 0; ext[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = ext[i];
    g_spill_path.Buffer = g_spill_path_buf;
    g_spill_path.Length = (USHORT)(pos * sizeof(WCHAR));
    g_spill_path.MaximumLength = sizeof(g_spill_path_buf);
    pos = base;
    for (i = 0; sending_ext[i] != L'\0'; i++)
        g_sending_path_buf[pos++] = sending_ext[i];
    g_sending_path.Buffer = g_sending_path_buf;
    g_sending_path.Length = (USHORT)(pos * sizeof(WCHAR));
    g_sending_path.MaximumLength = sizeof(g_sending_path_buf);
}

static NTSTATUS WaitStopMs(ULONG ms)
{
    return HilWaitMs(&g_stop, ms); /* STATUS_SUCCESS = stop requested */
}

/* ------------------------------------------------------------------------------------------ */
/* event queue (callback side)                                                                */

/*
 * Queues one notification and takes over image (a kernel handle to the image's file object, or
 * NULL).  The queue holds at most MAX_PENDING_EVENTS events and MAX_PENDING_BYTES of non-paged
 * pool: what does not fit is dropped and counted for the next END (like a full store), never
 * silently.  PASSIVE_LEVEL.
 */
static VOID QueueEvent(BOOLEAN created, ULONG pid, HANDLE image, const WCHAR *path,
                       USHORT path_bytes)
{
    PHIL_EVENT ev;
    ULONG bytes;
    KIRQL irql;

    /* UTF-16 units past HIL_MAX_PATH never reach the record: each makes a UTF-8 byte at least */
    if (path_bytes > HIL_MAX_PATH * sizeof(WCHAR))
        path_bytes = HIL_MAX_PATH * sizeof(WCHAR);
    bytes = FIELD_OFFSET(HIL_EVENT, Path) + path_bytes + sizeof(WCHAR);
    if (g_stopping)
        goto release;
    if (InterlockedIncrement(&g_event_count) > MAX_PENDING_EVENTS)
        goto drop_count;
    if (InterlockedExchangeAdd(&g_event_bytes, (LONG)bytes) + (LONG)bytes > MAX_PENDING_BYTES)
        goto drop_bytes;
    ev = (PHIL_EVENT)ExAllocatePoolWithTag(NonPagedPool, bytes, POOL_TAG);
    if (ev == NULL)
        goto drop_bytes;
    ev->Created = created;
    ev->Pid = pid;
    ev->Bytes = bytes;
    ev->Image = image;
    ev->PathBytes = path_bytes;
    if (path_bytes)
        RtlCopyMemory(ev->Path, path, path_bytes);
    ev->Path[path_bytes / sizeof(WCHAR)] = L'\0';
    KeAcquireSpinLock(&g_events_lock, &irql);
    InsertTailList(&g_events, &ev->Link);
    KeReleaseSpinLock(&g_events_lock, irql);
    KeSetEvent(&g_work, IO_NO_INCREMENT, FALSE);
    return;

drop_bytes:
    InterlockedExchangeAdd(&g_event_bytes, -(LONG)bytes);
drop_count:
    InterlockedDecrement(&g_event_count);
    HilStoreCountDrop(&g_store, 1);
release:
    if (image != NULL)
        ZwClose(image);
}

/*
 * A kernel handle to the file object being executed (PS_CREATE_NOTIFY_INFO.FileObject), taken
 * in the callback: the worker hashes through it, the bytes of that very file, never by opening
 * the path again (which may name another file by then).  No I/O: a handle to an object that
 * is open already.  It keeps the file object open (its cleanup comes when the worker closes
 * it), so it is taken only while the object has not been cleaned up: NtCreateUserProcess holds
 * its own handle during the callback; a process made from a section whose file was closed
 * already (FO_CLEANUP_COMPLETE) gets no hash rather than a second cleanup of that object.
 */
static HANDLE ImageHandle(PFILE_OBJECT file)
{
    HANDLE h;

    if (file == NULL || (file->Flags & (FO_CLEANUP_COMPLETE | FO_STREAM_FILE)))
        return NULL;
    if (!NT_SUCCESS(ObOpenObjectByPointer(file, OBJ_KERNEL_HANDLE, NULL,
                                          FILE_READ_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE,
                                          HIL_FILE_OBJECT_TYPE, KernelMode, &h)))
        return NULL;
    return h;
}

static VOID NTAPI ProcessNotify(PEPROCESS process, HANDLE pid, PPS_CREATE_NOTIFY_INFO info)
{
    UNREFERENCED_PARAMETER(process);
    if (info != NULL) {
        PCUNICODE_STRING name = info->ImageFileName; /* may be NULL (FileOpenNameAvailable) */
        USHORT bytes = 0;

        if (name != NULL && name->Buffer != NULL)
            bytes = name->Length & ~1;
        /* FileObject: NULL for some subsystem processes */
        QueueEvent(TRUE, (ULONG)(ULONG_PTR)pid, ImageHandle(info->FileObject),
                   bytes ? name->Buffer : NULL, bytes);
    } else {
        QueueEvent(FALSE, (ULONG)(ULONG_PTR)pid, NULL, NULL, 0);
    }
}

static PHIL_EVENT DequeueEvent(VOID)
{
    PLIST_ENTRY e = NULL;
    KIRQL irql;

    KeAcquireSpinLock(&g_events_lock, &irql);
    if (!IsListEmpty(&g_events))
        e = RemoveHeadList(&g_events);
    KeReleaseSpinLock(&g_events_lock, irql);
    if (e == NULL)
        return NULL;
    InterlockedDecrement(&g_event_count);
    InterlockedExchangeAdd(&g_event_bytes, -(LONG)CONTAINING_RECORD(e, HIL_EVENT, Link)->Bytes);
    return CONTAINING_RECORD(e, HIL_EVENT, Link);
}

static VOID FreeEvent(PHIL_EVENT ev)
{
    if (ev->Image != NULL)
        ZwClose(ev->Image);
    ExFreePoolWithTag(ev, POOL_TAG);
}

/* ------------------------------------------------------------------------------------------ */
/* worker: hashing, records, spill                                                            */

/* Reads at *offset through h; waits when h's file object does asynchronous I/O. */
static NTSTATUS ReadAt(HANDLE h, HANDLE done, PVOID buf, ULONG len, LARGE_INTEGER *offset,
                       IO_STATUS_BLOCK *iosb)
{
    NTSTATUS status = ZwReadFile(h, done, NULL, NULL, iosb, buf, len, offset, NULL);

    if (status == STATUS_PENDING) {
        ZwWaitForSingleObject(done, FALSE, NULL);
        status = iosb->Status;
    }
    return status;
}

/*
 * Size and SHA-256 of an image read through h, the kernel handle to its file object taken at
 * notification time (ImageHandle()): the bytes of the file that is being executed, whatever
 * its path names by now; the path is never opened again.  Explicit offsets.
 */
static NTSTATUS HashImage(HANDLE h, ULONGLONG *size, UCHAR digest[32])
{
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;
    FILE_STANDARD_INFORMATION fsi;
    LARGE_INTEGER offset;
    HANDLE done = NULL;
    NTSTATUS status;
    hil_sha256 ctx;

    *size = 0;
    RtlZeroMemory(digest, 32);
    InitializeObjectAttributes(&oa, NULL, OBJ_KERNEL_HANDLE, NULL, NULL);
    status = ZwCreateEvent(&done, EVENT_ALL_ACCESS, &oa, SynchronizationEvent, FALSE);
    if (NT_SUCCESS(status))
        status = ZwQueryInformationFile(h, &iosb, &fsi, sizeof(fsi), FileStandardInformation);
    if (NT_SUCCESS(status)) {
        *size = (ULONGLONG)fsi.EndOfFile.QuadPart;
        if (*size > MAX_HASH_BYTES)
            status = STATUS_FILE_TOO_LARGE;
    }
    if (NT_SUCCESS(status)) {
        hil_sha256_init(&ctx);
        offset.QuadPart = 0;
        for (;;) {
            status = ReadAt(h, done, g_hash_buf, IO_CHUNK, &offset, &iosb);
            if (status == STATUS_END_OF_FILE || (NT_SUCCESS(status) && iosb.Information == 0)) {
                status = STATUS_SUCCESS;
                break;
            }
            if (!NT_SUCCESS(status))
                break;
            hil_sha256_update(&ctx, g_hash_buf, iosb.Information);
            offset.QuadPart += iosb.Information;
            if ((ULONGLONG)offset.QuadPart > MAX_HASH_BYTES) {
                status = STATUS_FILE_TOO_LARGE;
                break;
            }
        }
        if (NT_SUCCESS(status)) {
            hil_sha256_final(&ctx, digest);
            *size = (ULONGLONG)offset.QuadPart; /* what we hashed is what we report */
        }
    }
    if (done != NULL)
        ZwClose(done);
    if (!NT_SUCCESS(status)) {
        RtlZeroMemory(digest, 32);
    }
    return status;
}

static VOID ProcessEvent(const HIL_EVENT *ev)
{
    ULONGLONG size = 0;
    UCHAR digest[32];
    size_t path_len = 0;
    int n;

    RtlZeroMemory(digest, sizeof(digest));
    if (ev->Created && ev->Image != NULL) {
        NTSTATUS status = HashImage(ev->Image, &size, digest);
        if (!NT_SUCCESS(status))
            HIL_LOG(TAG, "pid %lu: cannot hash image: 0x%08lx", (unsigned long)ev->Pid,
                    (unsigned long)status);
    }
    if (ev->Created && ev->PathBytes > 0)
        path_len = hil_utf16_to_utf8((const uint16_t *)ev->Path, ev->PathBytes / 2, g_path8,
                                     HIL_MAX_PATH);
    n = hil_encode_process_record(g_rec, HIL_PROCESS_RECORD_MAX,
                                  ev->Created ? HIL_REC_PROCESS_CREATED : HIL_REC_PROCESS_EXITED,
                                  ev->Pid, size, digest, g_path8, path_len);
    if (n < 0) {
        HIL_LOG(TAG, "pid %lu: encode failed %s", (unsigned long)ev->Pid, hil_strerror_name(n));
        HilStoreCountDrop(&g_store, 1);
        return;
    }
    if (!HilStoreAppend(&g_store, g_rec, (ULONG)n))
        HIL_LOG(TAG, "store full: record for pid %lu dropped", (unsigned long)ev->Pid);
    else
        HIL_LOG(TAG, "saved %s pid=%lu size=%llu", ev->Created ? "created" : "exited",
                (unsigned long)ev->Pid, (unsigned long long)size);
}

static NTSTATUS OpenSpill(PUNICODE_STRING path, HANDLE *h, ACCESS_MASK access,
                          ULONG disposition)
{
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;

    InitializeObjectAttributes(&oa, path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    return ZwCreateFile(h, access | SYNCHRONIZE, &oa, &iosb, NULL, FILE_ATTRIBUTE_NORMAL, 0,
                        disposition,
                        FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE |
                            FILE_WRITE_THROUGH,
                        NULL, 0);
}

/*
 * A file of whole records that could not be cut back after a failed append: appending more
 * would put records behind a torn one, where the reader never finds them.  Cleared when the
 * file is renamed away (spill) or deleted (sending).  Under g_spill_lock.
 */
static BOOLEAN g_spill_torn, g_sending_torn;

/*
 * Appends data (whole records) to the end of path.  A failed or short write is cut back off
 * the file: a torn record would swallow every record appended after it (its length runs into
 * them).  Under g_spill_lock.
 */
static NTSTATUS AppendRecords(PUNICODE_STRING path, BOOLEAN *torn, const UCHAR *data, ULONG len)
{
    FILE_STANDARD_INFORMATION fsi;
    FILE_END_OF_FILE_INFORMATION eof;
    IO_STATUS_BLOCK iosb;
    NTSTATUS status, cut;
    HANDLE h;

    if (*torn)
        return STATUS_FILE_CORRUPT_ERROR;
    status = OpenSpill(path, &h, FILE_WRITE_DATA | FILE_READ_ATTRIBUTES, FILE_OPEN_IF);
    if (!NT_SUCCESS(status))
        return status;
    status = ZwQueryInformationFile(h, &iosb, &fsi, sizeof(fsi), FileStandardInformation);
    if (NT_SUCCESS(status) && (ULONGLONG)fsi.EndOfFile.QuadPart + len > MAX_SPILL_BYTES)
        status = STATUS_DISK_FULL;
    if (NT_SUCCESS(status)) {
        status = ZwWriteFile(h, NULL, NULL, NULL, &iosb, (PVOID)data, len, &fsi.EndOfFile,
                             NULL);
        if (NT_SUCCESS(status) && iosb.Information != len)
            status = STATUS_DISK_FULL;
        if (!NT_SUCCESS(status)) {
            eof.EndOfFile = fsi.EndOfFile;
            cut = ZwSetInformationFile(h, &iosb, &eof, sizeof(eof), FileEndOfFileInformation);
            if (!NT_SUCCESS(cut)) {
                *torn = TRUE;
                HIL_LOG(TAG, "%s file: cannot cut a failed append back off (0x%08lx); "
                        "no more appends to it", torn == &g_spill_torn ? "spill" : "sending",
                        (unsigned long)cut);
            }
        }
    }
    ZwClose(h);
    return status;
}

/* Writes every saved record to the end of the spill file; the store is empty afterwards
 * unless the write failed (then everything goes back, and the file is as it was). */
static VOID SpillStore(VOID)
{
    ULONG count, dropped, len;
    ULONGLONG oldest;
    NTSTATUS status;

    HilLock(&g_spill_lock);
    len = HilStoreTake(&g_store, g_spill_wr, &count, &oldest, &dropped);
    if (len == 0) {
        HilStorePutBack(&g_store, g_spill_wr, 0, 0, 0, dropped);
        HilUnlock(&g_spill_lock);
        return;
    }
    status = AppendRecords(&g_spill_path, &g_spill_torn, g_spill_wr, len);
    if (NT_SUCCESS(status)) {
        HilStorePutBack(&g_store, g_spill_wr, 0, 0, 0, dropped);
        HIL_LOG(TAG, "spilled %lu records to disk", (unsigned long)count);
    } else {
        HilStorePutBack(&g_store, g_spill_wr, len, count, oldest, dropped);
        HIL_LOG(TAG, "spill failed 0x%08lx; %lu records stay in memory", (unsigned long)status,
                (unsigned long)count);
    }
    HilUnlock(&g_spill_lock);
}

static VOID NTAPI WorkerThread(PVOID context)
{
    PVOID objects[2];
    PHIL_EVENT ev;

    UNREFERENCED_PARAMETER(context);
    objects[0] = &g_stop;
    objects[1] = &g_work;
    for (;;) {
        LARGE_INTEGER tick;
        NTSTATUS wait;
        tick.QuadPart = -10000LL * 250; /* spill age check period */
        wait = KeWaitForMultipleObjects(2, objects, WaitAny, Executive, KernelMode, FALSE, &tick,
                                        NULL);
        while ((ev = DequeueEvent()) != NULL) {
            ProcessEvent(ev);
            FreeEvent(ev);
        }
        if (wait == STATUS_WAIT_0)
            break;
        if (HilStoreOldestAgeMs(&g_store) >= g_spill_after_ms)
            SpillStore();
    }
    /* Unloading: what was not delivered goes to disk and is sent after the next load. */
    if (HilStoreCount(&g_store) > 0)
        SpillStore();
    HIL_LOG(TAG, "worker stopped");
    PsTerminateSystemThread(STATUS_SUCCESS);
}

/* ------------------------------------------------------------------------------------------ */
/* network: session with the collector                                                        */

static NTSTATUS SendFrame(PKSOCK sock, const UCHAR *frame, int len)
{
    if (len < 0)
        return STATUS_INTERNAL_ERROR;
    return KsockSend(sock, frame, (SIZE_T)len, SEND_TIMEOUT_MS);
}

/* Sends the whole records in data[0..len) as RECORDS frames (hil_records_fill packs them);
 * counts them into *count and returns in *consumed the bytes sent (a trailing partial record,
 * e.g. at the end of a spill-file chunk, is left for the caller). */
static NTSTATUS SendRecordRun(PKSOCK sock, const UCHAR *data, ULONG len, ULONG *count,
                              ULONG *consumed)
{
    struct hil_records_builder b;
    size_t off = 0;
    NTSTATUS status;
    int n;

    *consumed = 0;
    for (;;) {
        if (hil_records_begin(&b, g_frame, HIL_MAX_FRAME) < 0)
            return STATUS_INTERNAL_ERROR;
        n = hil_records_fill(&b, data, len, &off);
        if (b.count > 0) {
            status = SendFrame(sock, g_frame, hil_records_finish(&b));
            if (!NT_SUCCESS(status))
                return status;
            *count += b.count;
        }
        if (n < 0 || off >= len) /* done, or a partial/corrupt record at off */
            break;
        if (n == 0 && b.count == 0) {
            /* A record larger than a frame: only a corrupt buffer has one.  Skip it. */
            ULONG skip = HilRecordSize(data + off, (ULONG)(len - off));
            if (skip == 0)
                break;
            HIL_LOG(TAG, "skipping an unframeable record of %lu bytes", (unsigned long)skip);
            off += skip;
        }
    }
    *consumed = (ULONG)off;
    return STATUS_SUCCESS;
}

static NTSTATUS SendSpill(PKSOCK sock, ULONG *count, BOOLEAN *had_file)
{
    HANDLE h;
    IO_STATUS_BLOCK iosb;
    LARGE_INTEGER offset;
    ULONG fill = 0;
    NTSTATUS status;

    *had_file = FALSE;
    status = OpenSpill(&g_sending_path, &h, GENERIC_READ, FILE_OPEN);
    if (status == STATUS_OBJECT_NAME_NOT_FOUND || status == STATUS_OBJECT_PATH_NOT_FOUND)
        return STATUS_SUCCESS;
    if (!NT_SUCCESS(status))
        return status;
    *had_file = TRUE;
    offset.QuadPart = 0;
    for (;;) {
        ULONG used;
        status = ZwReadFile(h, NULL, NULL, NULL, &iosb, g_spill_rd + fill, IO_CHUNK - fill,
                            &offset, NULL);
        if (status == STATUS_END_OF_FILE || (NT_SUCCESS(status) && iosb.Information == 0)) {
            status = STATUS_SUCCESS; /* a partial record left in the buffer is a torn write */
            break;
        }
        if (!NT_SUCCESS(status))
            break;
        offset.QuadPart += iosb.Information;
        fill += (ULONG)iosb.Information;
        status = SendRecordRun(sock, g_spill_rd, fill, count, &used);
        if (!NT_SUCCESS(status))
            break;
        RtlMoveMemory(g_spill_rd, g_spill_rd + used, fill - used);
        fill -= used;
    }
    if (NT_SUCCESS(status) && fill > 0)
        HIL_LOG(TAG, "spill file: ignoring %lu bytes of a torn or corrupt record", (unsigned long)fill);
    ZwClose(h);
    return status;
}

/*
 * Under g_spill_lock, when the spill file cannot be renamed (a filter refuses, another
 * volume...): its bytes are copied into a new .sending file, then it is emptied.  On failure
 * the .sending file is removed again and the spill file is left as it was.  A crash between the
 * copy and the emptying sends the records twice, never loses them.
 */
static NTSTATUS SpillCopyToSending(VOID)
{
    FILE_END_OF_FILE_INFORMATION eof;
    IO_STATUS_BLOCK iosb;
    OBJECT_ATTRIBUTES oa;
    LARGE_INTEGER offset;
    NTSTATUS status;
    HANDLE h;

    /* a new .sending file, never one an earlier batch left */
    status = OpenSpill(&g_sending_path, &h, FILE_WRITE_DATA, FILE_CREATE);
    if (!NT_SUCCESS(status))
        return status;
    ZwClose(h);
    g_sending_torn = FALSE;
    status = OpenSpill(&g_spill_path, &h, FILE_READ_DATA | FILE_WRITE_DATA, FILE_OPEN);
    if (!NT_SUCCESS(status))
        goto remove;
    offset.QuadPart = 0;
    for (;;) {
        status = ZwReadFile(h, NULL, NULL, NULL, &iosb, g_spill_rd, IO_CHUNK, &offset, NULL);
        if (status == STATUS_END_OF_FILE || (NT_SUCCESS(status) && iosb.Information == 0)) {
            status = STATUS_SUCCESS;
            break;
        }
        if (!NT_SUCCESS(status))
            break;
        status = AppendRecords(&g_sending_path, &g_sending_torn, g_spill_rd,
                               (ULONG)iosb.Information);
        if (!NT_SUCCESS(status))
            break;
        offset.QuadPart += iosb.Information;
    }
    if (NT_SUCCESS(status)) {
        eof.EndOfFile.QuadPart = 0;
        status = ZwSetInformationFile(h, &iosb, &eof, sizeof(eof), FileEndOfFileInformation);
    }
    ZwClose(h);
    if (NT_SUCCESS(status)) {
        g_sending_torn = g_spill_torn;
        g_spill_torn = FALSE;
        return status;
    }
remove:
    InitializeObjectAttributes(&oa, &g_sending_path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
                               NULL, NULL);
    ZwDeleteFile(&oa);
    g_sending_torn = FALSE;
    return status;
}

/*
 * Under g_spill_lock: the spill file becomes the .sending file, the network thread's alone
 * from then on (the worker starts a new spill file).  Fails with STATUS_OBJECT_NAME_COLLISION
 * while an earlier .sending file is there, and with STATUS_OBJECT_NAME_NOT_FOUND (or
 * _PATH_NOT_FOUND) when there is no spill file.
 */
static NTSTATUS SpillToSending(VOID)
{
    HIL_RENAME_INFO ri;
    IO_STATUS_BLOCK iosb;
    NTSTATUS status;
    HANDLE h;

    status = OpenSpill(&g_spill_path, &h, DELETE, FILE_OPEN);
    if (!NT_SUCCESS(status))
        return status;
    RtlZeroMemory(&ri, sizeof(ri));
    ri.FileNameLength = g_sending_path.Length;
    RtlCopyMemory(ri.FileName, g_sending_path.Buffer, g_sending_path.Length);
    status = ZwSetInformationFile(h, &iosb, &ri, sizeof(ri), FileRenameInformation);
    ZwClose(h);
    if (NT_SUCCESS(status)) {
        g_sending_torn = g_spill_torn;
        g_spill_torn = FALSE;
    } else if (status != STATUS_OBJECT_NAME_COLLISION) {
        status = SpillCopyToSending();
    }
    return status;
}

/* Under g_spill_lock: is there a spill file (records newer than the .sending file's)? */
static BOOLEAN SpillFileExists(VOID)
{
    HANDLE h;

    if (!NT_SUCCESS(OpenSpill(&g_spill_path, &h, FILE_READ_ATTRIBUTES, FILE_OPEN)))
        return FALSE;
    ZwClose(h);
    return TRUE;
}

/*
 * One batch: the .sending file, then the records taken from memory, then END.
 *
 * The cut happens under the spill lock (everything in the spill file is older than everything
 * in the store): the spill file becomes the .sending file and the store is taken.  The sends
 * run without the lock, so a collector that reads slowly, or not at all, never holds up the
 * worker, which spills into a new spill file meanwhile.  A .sending file an undelivered batch
 * left goes out alone first: the spill file and the store, newer, wait for the next REQUEST.
 */
static NTSTATUS AnswerRequest(PKSOCK sock, ULONG request_id)
{
    ULONG count = 0, taken = 0, mem_count = 0, dropped = 0, used;
    ULONGLONG oldest = 0;
    BOOLEAN had_file, behind_sending;
    NTSTATUS status, rs;
    OBJECT_ATTRIBUTES oa;

    HilLock(&g_spill_lock);
    rs = SpillToSending();
    behind_sending = !NT_SUCCESS(rs) && rs != STATUS_OBJECT_NAME_NOT_FOUND &&
                     rs != STATUS_OBJECT_PATH_NOT_FOUND;
    if (behind_sending && rs != STATUS_OBJECT_NAME_COLLISION)
        HIL_LOG(TAG, "spill file: cannot rename it for sending: 0x%08lx", (unsigned long)rs);
    if (!behind_sending)
        taken = HilStoreTake(&g_store, g_send_buf, &mem_count, &oldest, &dropped);
    HilUnlock(&g_spill_lock);

    status = SendSpill(sock, &count, &had_file);
    if (NT_SUCCESS(status))
        status = SendRecordRun(sock, g_send_buf, taken, &count, &used);
    if (NT_SUCCESS(status))
        status = SendFrame(sock, g_frame, hil_encode_end(g_frame, HIL_MAX_FRAME, request_id,
                                                         count, dropped));
    if (NT_SUCCESS(status)) {
        if (had_file) {
            InitializeObjectAttributes(&oa, &g_sending_path,
                                       OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
            ZwDeleteFile(&oa);
            HilLock(&g_spill_lock);
            g_sending_torn = FALSE;
            HilUnlock(&g_spill_lock);
        }
        HIL_LOG(TAG, "batch %lu: %lu records, %lu dropped", (unsigned long)request_id,
                (unsigned long)count, (unsigned long)dropped);
        return status;
    }
    /*
     * Not delivered: the records go back ahead of anything saved since.  If the worker has
     * spilled since the cut, ahead of its spill file is the end of the .sending file (sent
     * first next time); else the front of the store.
     */
    HilLock(&g_spill_lock);
    if (taken > 0 && SpillFileExists() &&
        NT_SUCCESS(AppendRecords(&g_sending_path, &g_sending_torn, g_send_buf, taken)))
        taken = mem_count = 0;
    HilStorePutBack(&g_store, g_send_buf, taken, mem_count, oldest, dropped);
    HilUnlock(&g_spill_lock);
    return status;
}

static NTSTATUS RunSession(PKSOCK sock)
{
    struct hil_frame_header fh;
    UCHAR hdr[HIL_HEADER_LEN];
    NTSTATUS status;
    int rc;

    rc = hil_encode_hello_token(g_frame, HIL_MAX_FRAME, (const hil_u8 *)AGENT_KIND,
                                sizeof(AGENT_KIND) - 1, g_os, g_os_len, g_host, g_host_len,
                                g_token, g_token_len);
    status = SendFrame(sock, g_frame, rc);
    if (!NT_SUCCESS(status))
        return status;
    HIL_LOG(TAG, "hello sent");

    for (;;) {
        hil_u32 request_id;
        status = KsockReceiveAll(sock, hdr, sizeof(hdr), KSOCK_WAIT_FOREVER);
        if (!NT_SUCCESS(status))
            return status;
        rc = hil_decode_header(hdr, sizeof(hdr), &fh);
        if (rc < 0) {
            HIL_LOG(TAG, "protocol error from collector: %s", hil_strerror_name(rc));
            return STATUS_INVALID_NETWORK_RESPONSE;
        }
        if (fh.type != HIL_FRAME_REQUEST || fh.length > MAX_REQUEST_PAYLOAD) {
            HIL_LOG(TAG, "protocol error from collector: UnexpectedFrame type %u len %lu",
                    (unsigned)fh.type, (unsigned long)fh.length);
            return STATUS_INVALID_NETWORK_RESPONSE;
        }
        status = KsockReceiveAll(sock, g_frame, fh.length, PAYLOAD_TIMEOUT_MS);
        if (!NT_SUCCESS(status))
            return status;
        rc = hil_decode_request(g_frame, fh.length, &request_id);
        if (rc < 0) {
            HIL_LOG(TAG, "protocol error from collector: %s", hil_strerror_name(rc));
            return STATUS_INVALID_NETWORK_RESPONSE;
        }
        status = AnswerRequest(sock, request_id);
        if (!NT_SUCCESS(status))
            return status;
    }
}

static VOID NTAPI NetworkThread(PVOID context)
{
    ULONG backoff = BACKOFF_MIN_MS;
    BOOLEAN logged_failure = FALSE;

    UNREFERENCED_PARAMETER(context);
    while (!g_stopping) {
        PKSOCK sock = NULL;
        NTSTATUS status = KsockCreate(&sock, KsockConnectionSocket);

        if (NT_SUCCESS(status)) {
            HilLock(&g_sock_lock);
            g_sock = sock;
            HilUnlock(&g_sock_lock);
            if (g_stopping)
                status = STATUS_CANCELLED;
            else
                status = KsockConnect(sock, g_ip, g_port, CONNECT_TIMEOUT_MS);
        }
        if (NT_SUCCESS(status)) {
            HIL_LOG(TAG, "connected to collector port %u", (unsigned)g_port);
            logged_failure = FALSE;
            backoff = BACKOFF_MIN_MS;
            status = RunSession(sock);
            HIL_LOG(TAG, "session ended 0x%08lx", (unsigned long)status);
            if (!g_stopping)
                HIL_LOG(TAG, "connection lost 0x%08lx", (unsigned long)status);
        } else if (!logged_failure && !g_stopping) {
            HIL_LOG(TAG, "cannot reach collector: 0x%08lx (retrying with backoff)",
                    (unsigned long)status);
            logged_failure = TRUE;
        }
        if (sock != NULL) {
            HilLock(&g_sock_lock);
            g_sock = NULL;
            HilUnlock(&g_sock_lock);
            KsockClose(sock);
        }
        if (g_stopping || WaitStopMs(backoff) == STATUS_SUCCESS)
            break;
        backoff = backoff * 2 > g_backoff_max_ms ? g_backoff_max_ms : backoff * 2;
    }
    HIL_LOG(TAG, "network stopped");
    PsTerminateSystemThread(STATUS_SUCCESS);
}

/* ------------------------------------------------------------------------------------------ */
/* test-build control device                                                                  */

#ifdef HIL_TEST_BUILD
static NTSTATUS CompleteIrp(PIRP irp, NTSTATUS status, ULONG_PTR info)
{
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = info;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}

static NTSTATUS NTAPI DispatchCreateClose(PDEVICE_OBJECT dev, PIRP irp)
{
    UNREFERENCED_PARAMETER(dev);
    return CompleteIrp(irp, STATUS_SUCCESS, 0);
}

/*
 * A handle to the injected image taken as ProcessNotify() takes one: the file is opened now, in
 * the caller's context and with the caller's access checks, and its file object goes through
 * ImageHandle(), so the worker hashes it exactly as a real notification's.  NULL when it cannot
 * be opened (the record then carries no hash, like a notification without a file object).
 */
static HANDLE OpenInjectedImage(const HILAGENT_INJECT *in)
{
    UNICODE_STRING path;
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;
    PFILE_OBJECT file;
    HANDLE h, image = NULL;
    NTSTATUS status;

    path.Buffer = (PWCH)(in + 1);
    path.Length = path.MaximumLength = (USHORT)(in->path_chars * sizeof(WCHAR));
    InitializeObjectAttributes(&oa, &path,
                               OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE | OBJ_FORCE_ACCESS_CHECK,
                               NULL, NULL);
    status = ZwCreateFile(&h, GENERIC_READ | SYNCHRONIZE, &oa, &iosb, NULL,
                          FILE_ATTRIBUTE_NORMAL,
                          FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN,
                          FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE, NULL, 0);
    if (NT_SUCCESS(status)) {
        status = ObReferenceObjectByHandle(h, FILE_READ_DATA, HIL_FILE_OBJECT_TYPE, KernelMode,
                                           (PVOID *)&file, NULL);
        if (NT_SUCCESS(status)) {
            image = ImageHandle(file);
            ObDereferenceObject(file);
            if (image == NULL)
                status = STATUS_UNSUCCESSFUL;
        }
        ZwClose(h);
    }
    if (!NT_SUCCESS(status))
        HIL_LOG(TAG, "pid %lu: cannot open the injected image: 0x%08lx", (unsigned long)in->pid,
                (unsigned long)status);
    return image;
}

static NTSTATUS NTAPI DispatchIoctl(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    const HILAGENT_INJECT *in = (const HILAGENT_INJECT *)irp->AssociatedIrp.SystemBuffer;
    ULONG in_len = sp->Parameters.DeviceIoControl.InputBufferLength;
    LUID load_driver = {SE_LOAD_DRIVER_PRIVILEGE, 0};

    UNREFERENCED_PARAMETER(dev);
    if (sp->Parameters.DeviceIoControl.IoControlCode != IOCTL_HILAGENT_INJECT)
        return CompleteIrp(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    /* Only callers who could load a driver anyway may inject. */
    if (!SeSinglePrivilegeCheck(load_driver, irp->RequestorMode))
        return CompleteIrp(irp, STATUS_PRIVILEGE_NOT_HELD, 0);
    if (in == NULL || in_len < sizeof(*in) || in->version != HILAGENT_INJECT_VERSION ||
        in->path_chars > HILAGENT_INJECT_MAX_PATH_CHARS ||
        in_len != sizeof(*in) + in->path_chars * sizeof(WCHAR) ||
        (in->created == 0 && in->path_chars != 0) || in->created > 1)
        return CompleteIrp(irp, STATUS_INVALID_PARAMETER, 0);
    QueueEvent(in->created != 0, in->pid, in->created ? OpenInjectedImage(in) : NULL,
               (const WCHAR *)(in + 1), (USHORT)(in->path_chars * sizeof(WCHAR)));
    return CompleteIrp(irp, STATUS_SUCCESS, 0);
}

static NTSTATUS CreateTestDevice(PDRIVER_OBJECT driver)
{
    UNICODE_STRING name;
    NTSTATUS status;

    RtlInitUnicodeString(&name, HILAGENT_DEVICE_NAME);
    RtlInitUnicodeString(&g_dos_name, HILAGENT_DOS_NAME);
    status = IoCreateDevice(driver, 0, &name, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, FALSE,
                            &g_device);
    if (!NT_SUCCESS(status))
        return status;
    status = IoCreateSymbolicLink(&g_dos_name, &name);
    if (!NT_SUCCESS(status)) {
        IoDeleteDevice(g_device);
        g_device = NULL;
        return status;
    }
    g_link_created = TRUE;
    driver->MajorFunction[IRP_MJ_CREATE] = DispatchCreateClose;
    driver->MajorFunction[IRP_MJ_CLOSE] = DispatchCreateClose;
    driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = DispatchIoctl;
    g_device->Flags &= ~DO_DEVICE_INITIALIZING;
    HIL_LOG(TAG, "TEST BUILD: injection device ready");
    return STATUS_SUCCESS;
}

static VOID DeleteTestDevice(VOID)
{
    if (g_link_created)
        IoDeleteSymbolicLink(&g_dos_name);
    g_link_created = FALSE;
    if (g_device)
        IoDeleteDevice(g_device);
    g_device = NULL;
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* load / unload                                                                              */

static PUCHAR AllocBuf(SIZE_T n)
{
    return (PUCHAR)ExAllocatePoolWithTag(NonPagedPool, n, POOL_TAG);
}

static VOID FreeBuf(PUCHAR *p)
{
    if (*p)
        ExFreePoolWithTag(*p, POOL_TAG);
    *p = NULL;
}

static VOID Teardown(VOID)
{
    PHIL_EVENT ev;
    ULONG left;

    if (g_notify_registered) {
        /* Returns once no callback is running any more. */
        PsSetCreateProcessNotifyRoutineEx(ProcessNotify, TRUE);
        g_notify_registered = FALSE;
    }
#ifdef HIL_TEST_BUILD
    DeleteTestDevice();
#endif
    InterlockedExchange(&g_stopping, 1);
    KeSetEvent(&g_stop, IO_NO_INCREMENT, FALSE);
    HIL_LOG(TAG, "stopping: closing the connection");
    HilLock(&g_sock_lock);
    if (g_sock)
        KsockShutdown(g_sock); /* completes a receive waiting for the next REQUEST */
    HilUnlock(&g_sock_lock);
    HIL_LOG(TAG, "stopping: joining threads");
    HilJoinThread(&g_net_thread);
    HilJoinThread(&g_worker_thread);
    while ((ev = DequeueEvent()) != NULL) /* only if the worker never started */
        FreeEvent(ev);
    left = g_store.Buf ? HilStoreCount(&g_store) : 0;
    if (g_wsk_started)
        KsockCleanup();
    g_wsk_started = FALSE;
    HilStoreFree(&g_store);
    FreeBuf(&g_send_buf);
    FreeBuf(&g_frame);
    FreeBuf(&g_spill_rd);
    FreeBuf(&g_spill_wr);
    FreeBuf(&g_hash_buf);
    FreeBuf(&g_rec);
    FreeBuf(&g_path8);
    HIL_LOG(TAG, "unloaded (%lu records not spilled)", (unsigned long)left);
}

static VOID NTAPI DriverUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    Teardown();
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    NTSTATUS status, token_status;
    ULONG spill_id;

    InitializeListHead(&g_events);
    KeInitializeSpinLock(&g_events_lock);
    KeInitializeEvent(&g_stop, NotificationEvent, FALSE);
    KeInitializeEvent(&g_work, SynchronizationEvent, FALSE);
    HilLockInit(&g_sock_lock);
    HilLockInit(&g_spill_lock);

    g_ip = HilReadParamDword(registry_path, L"CollectorIp", KSOCK_IPV4(127, 0, 0, 1));
    g_port = (USHORT)HilReadParamDword(registry_path, L"CollectorPort", 7171);
    g_spill_after_ms = HilReadParamDword(registry_path, L"SpillAfterMs", 300000);
    g_backoff_max_ms = HilReadParamDword(registry_path, L"BackoffMaxMs", 5000);
    if (g_backoff_max_ms < BACKOFF_MIN_MS)
        g_backoff_max_ms = BACKOFF_MIN_MS;
    spill_id = HilReadParamDword(registry_path, L"SpillId", 0);

    InitSpillPath(spill_id);
    InitIdentity();
    token_status = ReadToken(registry_path);

    status = HilStoreInit(&g_store, STORE_CAP);
    g_send_buf = AllocBuf(STORE_CAP);
    g_spill_wr = AllocBuf(STORE_CAP);
    g_frame = AllocBuf(HIL_MAX_FRAME);
    g_spill_rd = AllocBuf(IO_CHUNK);
    g_hash_buf = AllocBuf(IO_CHUNK);
    g_rec = AllocBuf(HIL_PROCESS_RECORD_MAX);
    g_path8 = AllocBuf(HIL_MAX_PATH);
    if (NT_SUCCESS(status) && (!g_send_buf || !g_spill_wr || !g_frame || !g_spill_rd ||
                               !g_hash_buf || !g_rec || !g_path8))
        status = STATUS_INSUFFICIENT_RESOURCES;
    if (NT_SUCCESS(status))
        status = token_status; /* a Token setting that cannot be sent fails the load */
    if (NT_SUCCESS(status)) {
        status = KsockStartup();
        g_wsk_started = NT_SUCCESS(status);
    }
    if (NT_SUCCESS(status))
        status = HilStartThread(WorkerThread, NULL, &g_worker_thread);
    if (NT_SUCCESS(status))
        status = HilStartThread(NetworkThread, NULL, &g_net_thread);
#ifdef HIL_TEST_BUILD
    if (NT_SUCCESS(status))
        status = CreateTestDevice(driver);
#endif
    if (NT_SUCCESS(status)) {
        NTSTATUS ns = PsSetCreateProcessNotifyRoutineEx(ProcessNotify, FALSE);
        if (NT_SUCCESS(ns)) {
            g_notify_registered = TRUE;
        } else {
            HIL_LOG(TAG, "PsSetCreateProcessNotifyRoutineEx failed 0x%08lx", (unsigned long)ns);
#ifndef HIL_TEST_BUILD
            status = ns; /* a release agent without its callback is useless */
#endif
        }
    }
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "load failed 0x%08lx", (unsigned long)status);
        Teardown();
        return status;
    }
    driver->DriverUnload = DriverUnload;
    HIL_LOG(TAG, "loaded: collector port %u, spill after %lu ms, host %.*s", (unsigned)g_port,
            (unsigned long)g_spill_after_ms, (int)g_host_len, g_host);
    return STATUS_SUCCESS;
}
