/*
 * hilagent.sys - process-creation agent speaking the kernel-hil protocol (drivers/protocol).
 *
 * Threads and who owns what:
 *   notify callback  PsSetCreateProcessNotifyRoutineEx: copies PID/created/image path into a
 *                    small event, queues it, signals the worker.  Nothing else (no file I/O,
 *                    no hashing, no waiting).
 *   worker thread    turns events into protocol records (opens the image, size + SHA-256 with
 *                    our own implementation), saves them in the store, and writes the store to
 *                    the spill file when its oldest record has waited SpillAfterMs.
 *   network thread   connects to the collector (backoff on failure), says HELLO, answers each
 *                    REQUEST with every saved record (spill file first, then memory) + END.
 *                    Records leave the agent only when the END was sent; on any failure they
 *                    go back to the store (at-least-once delivery, never silent loss).
 *
 * Parameters (REG_DWORD under the service key's Parameters): CollectorIp (host order,
 * default 127.0.0.1), CollectorPort (default 7171), SpillAfterMs (default 300000),
 * BackoffMaxMs (default 5000), SpillId (spill file \SystemRoot\hilagent-<id>.spill, default 0).
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

/* ntifs.h declares it; the rest of ntifs.h is not needed here. */
NTSYSAPI NTSTATUS NTAPI ZwDeleteFile(POBJECT_ATTRIBUTES ObjectAttributes);

#define TAG "hilagent"
#define POOL_TAG 'gAlH'
#define STORE_CAP (256 * 1024)
#define IO_CHUNK (64 * 1024)
#define MAX_PENDING_EVENTS 4096
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
    BOOLEAN FromUser;       /* test IOCTL: open the image with the caller's access checks */
    ULONG Pid;
    USHORT PathBytes;
    WCHAR Path[1];
} HIL_EVENT, *PHIL_EVENT;

/* configuration */
static ULONG g_ip;
static USHORT g_port;
static ULONG g_spill_after_ms;
static ULONG g_backoff_max_ms;
static UNICODE_STRING g_spill_path;
static WCHAR g_spill_path_buf[64];
static UCHAR g_os[64];
static ULONG g_os_len;
static UCHAR g_host[HIL_MAX_HELLO_STRING];
static ULONG g_host_len;

/* state */
static HIL_STORE g_store;
static KEVENT g_stop;               /* notification */
static KEVENT g_work;               /* synchronization */
static volatile LONG g_stopping;
static LIST_ENTRY g_events;
static KSPIN_LOCK g_events_lock;
static LONG g_event_count;
static HIL_LOCK g_sock_lock;
static PKSOCK g_sock;               /* current connection, guarded by g_sock_lock */
static HIL_LOCK g_spill_lock;       /* serialises every access to the spill file */
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
    static const WCHAR stem[] = L"\\hilagent-";
    PCWSTR dir = dirs[0];
    UCHAR digits[12];
    ULONG n, i, pos = 0;

    if (!DirectoryExists(dirs[0]) && DirectoryExists(dirs[1]))
        dir = dirs[1];
    for (i = 0; dir[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = dir[i];
    for (i = 0; stem[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = stem[i];
    n = AppendDecimal(digits, 0, sizeof(digits), spill_id);
    for (i = 0; i < n; i++)
        g_spill_path_buf[pos++] = digits[i];
    for (i = 0; ext[i] != L'\0'; i++)
        g_spill_path_buf[pos++] = ext[i];
    g_spill_path.Buffer = g_spill_path_buf;
    g_spill_path.Length = (USHORT)(pos * sizeof(WCHAR));
    g_spill_path.MaximumLength = sizeof(g_spill_path_buf);
}

static NTSTATUS WaitStopMs(ULONG ms)
{
    return HilWaitMs(&g_stop, ms); /* STATUS_SUCCESS = stop requested */
}

/* ------------------------------------------------------------------------------------------ */
/* event queue (callback side)                                                                */

static VOID QueueEvent(BOOLEAN created, ULONG pid, const WCHAR *path, USHORT path_bytes,
                       BOOLEAN from_user)
{
    PHIL_EVENT ev;
    KIRQL irql;

    if (g_stopping)
        return;
    if (InterlockedIncrement(&g_event_count) > MAX_PENDING_EVENTS) {
        InterlockedDecrement(&g_event_count);
        HilStoreCountDrop(&g_store, 1);
        return;
    }
    ev = (PHIL_EVENT)ExAllocatePoolWithTag(NonPagedPool,
                                           FIELD_OFFSET(HIL_EVENT, Path) + path_bytes + 2,
                                           POOL_TAG);
    if (ev == NULL) {
        InterlockedDecrement(&g_event_count);
        HilStoreCountDrop(&g_store, 1);
        return;
    }
    ev->Created = created;
    ev->FromUser = from_user;
    ev->Pid = pid;
    ev->PathBytes = path_bytes;
    if (path_bytes)
        RtlCopyMemory(ev->Path, path, path_bytes);
    ev->Path[path_bytes / sizeof(WCHAR)] = L'\0';
    KeAcquireSpinLock(&g_events_lock, &irql);
    InsertTailList(&g_events, &ev->Link);
    KeReleaseSpinLock(&g_events_lock, irql);
    KeSetEvent(&g_work, IO_NO_INCREMENT, FALSE);
}

static VOID NTAPI ProcessNotify(PEPROCESS process, HANDLE pid, PPS_CREATE_NOTIFY_INFO info)
{
    UNREFERENCED_PARAMETER(process);
    if (info != NULL) {
        PCUNICODE_STRING name = info->ImageFileName; /* may be NULL (FileOpenNameAvailable) */
        USHORT bytes = 0;
        /* The whole path is kept (the image is opened with it); only the UTF-8 copy in the
         * record is truncated to HIL_MAX_PATH bytes. */
        if (name != NULL && name->Buffer != NULL)
            bytes = name->Length & ~1;
        QueueEvent(TRUE, (ULONG)(ULONG_PTR)pid, bytes ? name->Buffer : NULL, bytes, FALSE);
    } else {
        QueueEvent(FALSE, (ULONG)(ULONG_PTR)pid, NULL, 0, FALSE);
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
    return CONTAINING_RECORD(e, HIL_EVENT, Link);
}

/* ------------------------------------------------------------------------------------------ */
/* worker: hashing, records, spill                                                            */

static NTSTATUS HashImage(const HIL_EVENT *ev, ULONGLONG *size, UCHAR digest[32])
{
    UNICODE_STRING path;
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;
    FILE_STANDARD_INFORMATION fsi;
    LARGE_INTEGER offset;
    HANDLE h;
    NTSTATUS status;
    hil_sha256 ctx;
    ULONG attrs = OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE;

    *size = 0;
    RtlZeroMemory(digest, 32);
    path.Buffer = (PWCH)ev->Path;
    path.Length = ev->PathBytes;
    path.MaximumLength = ev->PathBytes;
    if (ev->FromUser)
        attrs |= OBJ_FORCE_ACCESS_CHECK;
    InitializeObjectAttributes(&oa, &path, attrs, NULL, NULL);
    status = ZwCreateFile(&h, GENERIC_READ | SYNCHRONIZE, &oa, &iosb, NULL,
                          FILE_ATTRIBUTE_NORMAL,
                          FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN,
                          FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE, NULL, 0);
    if (!NT_SUCCESS(status))
        return status;
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
            status = ZwReadFile(h, NULL, NULL, NULL, &iosb, g_hash_buf, IO_CHUNK, &offset, NULL);
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
    ZwClose(h);
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
    if (ev->Created && ev->PathBytes > 0) {
        NTSTATUS status = HashImage(ev, &size, digest);
        if (!NT_SUCCESS(status))
            HIL_LOG(TAG, "pid %lu: cannot hash image: 0x%08lx", (unsigned long)ev->Pid,
                    (unsigned long)status);
        path_len = hil_utf16_to_utf8((const uint16_t *)ev->Path, ev->PathBytes / 2, g_path8,
                                     HIL_MAX_PATH);
    }
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

static NTSTATUS OpenSpill(HANDLE *h, ACCESS_MASK access, ULONG disposition)
{
    OBJECT_ATTRIBUTES oa;
    IO_STATUS_BLOCK iosb;

    InitializeObjectAttributes(&oa, &g_spill_path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
                               NULL, NULL);
    return ZwCreateFile(h, access | SYNCHRONIZE, &oa, &iosb, NULL, FILE_ATTRIBUTE_NORMAL, 0,
                        disposition,
                        FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE |
                            FILE_WRITE_THROUGH,
                        NULL, 0);
}

/* Writes every saved record to the end of the spill file; the store is empty afterwards
 * unless the write failed (then everything goes back). */
static VOID SpillStore(VOID)
{
    ULONG count, dropped, len;
    ULONGLONG oldest;
    HANDLE h;
    IO_STATUS_BLOCK iosb;
    FILE_STANDARD_INFORMATION fsi;
    LARGE_INTEGER end;
    NTSTATUS status;

    HilLock(&g_spill_lock);
    len = HilStoreTake(&g_store, g_spill_wr, &count, &oldest, &dropped);
    if (len == 0) {
        HilStorePutBack(&g_store, g_spill_wr, 0, 0, 0, dropped);
        HilUnlock(&g_spill_lock);
        return;
    }
    status = OpenSpill(&h, FILE_APPEND_DATA | FILE_READ_ATTRIBUTES, FILE_OPEN_IF);
    if (NT_SUCCESS(status)) {
        status = ZwQueryInformationFile(h, &iosb, &fsi, sizeof(fsi), FileStandardInformation);
        if (NT_SUCCESS(status) && (ULONGLONG)fsi.EndOfFile.QuadPart + len > MAX_SPILL_BYTES)
            status = STATUS_DISK_FULL;
        if (NT_SUCCESS(status)) {
            end.HighPart = -1;
            end.LowPart = FILE_WRITE_TO_END_OF_FILE;
            status = ZwWriteFile(h, NULL, NULL, NULL, &iosb, g_spill_wr, len, &end, NULL);
            if (NT_SUCCESS(status) && iosb.Information != len)
                status = STATUS_DISK_FULL;
        }
        ZwClose(h);
    }
    if (NT_SUCCESS(status)) {
        HilStorePutBack(&g_store, g_spill_wr, 0, 0, 0, dropped);
        HIL_LOG(TAG, "spilled %lu records to disk", (unsigned long)count);
    } else {
        /* A partial append leaves a truncated tail that the reader ignores. */
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
            ExFreePoolWithTag(ev, POOL_TAG);
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
    status = OpenSpill(&h, GENERIC_READ, FILE_OPEN);
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

static NTSTATUS AnswerRequest(PKSOCK sock, ULONG request_id)
{
    ULONG count = 0, taken, mem_count, dropped, used;
    ULONGLONG oldest;
    BOOLEAN had_file;
    NTSTATUS status;
    OBJECT_ATTRIBUTES oa;

    HilLock(&g_spill_lock);
    taken = HilStoreTake(&g_store, g_send_buf, &mem_count, &oldest, &dropped);
    status = SendSpill(sock, &count, &had_file);
    if (NT_SUCCESS(status))
        status = SendRecordRun(sock, g_send_buf, taken, &count, &used);
    if (NT_SUCCESS(status))
        status = SendFrame(sock, g_frame, hil_encode_end(g_frame, HIL_MAX_FRAME, request_id,
                                                         count, dropped));
    if (NT_SUCCESS(status)) {
        if (had_file) {
            InitializeObjectAttributes(&oa, &g_spill_path,
                                       OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
            ZwDeleteFile(&oa);
        }
        HIL_LOG(TAG, "batch %lu: %lu records, %lu dropped", (unsigned long)request_id,
                (unsigned long)count, (unsigned long)dropped);
    } else {
        HilStorePutBack(&g_store, g_send_buf, taken, mem_count, oldest, dropped);
    }
    HilUnlock(&g_spill_lock);
    return status;
}

static NTSTATUS RunSession(PKSOCK sock)
{
    struct hil_frame_header fh;
    UCHAR hdr[HIL_HEADER_LEN];
    NTSTATUS status;
    int rc;

    rc = hil_encode_hello(g_frame, HIL_MAX_FRAME, (const hil_u8 *)AGENT_KIND,
                          sizeof(AGENT_KIND) - 1, g_os, g_os_len, g_host, g_host_len);
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
    QueueEvent(in->created != 0, in->pid, (const WCHAR *)(in + 1),
               (USHORT)(in->path_chars * sizeof(WCHAR)), TRUE);
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
        ExFreePoolWithTag(ev, POOL_TAG);
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
    NTSTATUS status;
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
