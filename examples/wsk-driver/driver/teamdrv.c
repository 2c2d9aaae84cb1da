/*
 * teamdrv.sys - a team's WSK client driver reporting to a kernel-hil collector.
 *
 * At load it reads CollectorPort (REG_DWORD under the service key's Parameters) and starts a
 * system thread that connects to 127.0.0.1:<CollectorPort> (under Wine, the host's loopback)
 * and speaks the kernel-hil agent protocol (PROTOCOL.md beside hil_proto.h): it says HELLO,
 * then answers every REQUEST with a batch, its saved records in RECORDS frames and one END.
 * It has one saved record, a PROCESS_CREATED for pid 4242, which leaves with the first batch
 * that is sent whole; later batches are END alone.  When the connection fails it reconnects
 * with backoff and says HELLO again.  Unload shuts the socket down (which completes a pending
 * receive), joins the thread and releases WSK: ksock then logs its live IRP/MDL/buffer/socket
 * counters, which must all be zero.
 *
 * Built only against what kernel-hil ships: wsk.h (through ksock.h), hil_proto.h/.c, ksock.
 */
#include <ntddk.h>
#include "ksock.h"
#include "hilkm.h"
#include "hil_proto.h"

#define TAG "teamdrv"
#define AGENT_KIND "teamdrv"
#define AGENT_OS "windows"
#define AGENT_HOST "team-host"
#define IO_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define MAX_REQUEST_PAYLOAD 64

/* The one record this driver saved (PROTOCOL.md 4.1). */
#define DEMO_PID 4242
#define DEMO_IMAGE_SIZE 1234
static const char demo_path[] = "\\??\\C:\\team\\demo.exe";

static UCHAR g_frame[1024];         /* the network thread's frame buffer (HELLO, RECORDS, END) */
static BOOLEAN g_delivered;         /* the record went out with an END: never sent again */
static PKSOCK g_sock;               /* guarded by g_lock: unload shuts it down */
static HIL_LOCK g_lock;
static KEVENT g_stop_event;         /* notification: set once at unload */
static volatile LONG g_stop;
static PETHREAD g_thread;
static USHORT g_port;

static NTSTATUS SendFrame(PKSOCK sock, int len)
{
    if (len < 0)
        return STATUS_INTERNAL_ERROR; /* an encoder refused: a bug here, not on the wire */
    return KsockSend(sock, g_frame, (SIZE_T)len, IO_TIMEOUT_MS);
}

/* One batch: RECORDS with the saved record (while it is not delivered), then END. */
static NTSTATUS AnswerRequest(PKSOCK sock, hil_u32 request_id)
{
    static UCHAR record[HIL_PROCESS_PREFIX_LEN + sizeof(demo_path)];
    struct hil_records_builder b;
    UCHAR sha256[HIL_SHA256_LEN];
    hil_u32 count = 0;
    NTSTATUS status;
    int len;
    ULONG i;

    if (!g_delivered) {
        for (i = 0; i < HIL_SHA256_LEN; i++)
            sha256[i] = (UCHAR)i;
        len = hil_encode_process_record(record, sizeof(record), HIL_REC_PROCESS_CREATED, DEMO_PID,
                                        DEMO_IMAGE_SIZE, sha256, (const hil_u8 *)demo_path,
                                        sizeof(demo_path) - 1);
        if (len < 0 || hil_records_begin(&b, g_frame, sizeof(g_frame)) != HIL_OK ||
            hil_records_append(&b, record, (size_t)len) != HIL_OK)
            return STATUS_INTERNAL_ERROR;
        status = SendFrame(sock, hil_records_finish(&b));
        if (!NT_SUCCESS(status))
            return status;
        count = b.count;
    }
    status = SendFrame(sock, hil_encode_end(g_frame, sizeof(g_frame), request_id, count, 0));
    if (NT_SUCCESS(status) && count > 0) {
        g_delivered = TRUE;
        HIL_LOG(TAG, "delivered %lu record in batch %lu", (unsigned long)count,
                (unsigned long)request_id);
    }
    return status;
}

/* HELLO, then one batch per REQUEST until the connection fails or unload shuts it down. */
static NTSTATUS RunSession(PKSOCK sock)
{
    struct hil_frame_header fh;
    UCHAR hdr[HIL_HEADER_LEN];
    hil_u32 request_id;
    NTSTATUS status;
    int rc;

    rc = hil_encode_hello(g_frame, sizeof(g_frame), (const hil_u8 *)AGENT_KIND, sizeof(AGENT_KIND) - 1,
                          (const hil_u8 *)AGENT_OS, sizeof(AGENT_OS) - 1,
                          (const hil_u8 *)AGENT_HOST, sizeof(AGENT_HOST) - 1);
    status = SendFrame(sock, rc);
    if (!NT_SUCCESS(status))
        return status;
    HIL_LOG(TAG, "hello sent");
    for (;;) {
        status = KsockReceiveAll(sock, hdr, sizeof(hdr), KSOCK_WAIT_FOREVER);
        if (!NT_SUCCESS(status))
            return status;
        rc = hil_decode_header(hdr, sizeof(hdr), &fh);
        if (rc < 0) {
            HIL_LOG(TAG, "protocol error from collector: %s", hil_strerror_name(rc));
            return STATUS_INVALID_NETWORK_RESPONSE;
        }
        /* The collector sends only REQUESTs; a long one is not ours to buffer. */
        if (fh.type != HIL_FRAME_REQUEST || fh.length > MAX_REQUEST_PAYLOAD) {
            HIL_LOG(TAG, "protocol error from collector: UnexpectedFrame type %u length %lu",
                    (unsigned)fh.type, (unsigned long)fh.length);
            return STATUS_INVALID_NETWORK_RESPONSE;
        }
        status = KsockReceiveAll(sock, g_frame, fh.length, IO_TIMEOUT_MS);
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
    BOOLEAN failure_logged = FALSE;

    UNREFERENCED_PARAMETER(context);
    while (!g_stop) {
        PKSOCK sock = NULL;
        NTSTATUS status = KsockCreate(&sock, KsockConnectionSocket);

        if (NT_SUCCESS(status)) {
            /* Published before connecting, so unload can shut a pending connect down. */
            HilLock(&g_lock);
            g_sock = sock;
            HilUnlock(&g_lock);
            status = g_stop ? STATUS_CANCELLED
                            : KsockConnect(sock, KSOCK_IPV4(127, 0, 0, 1), g_port, IO_TIMEOUT_MS);
        }
        if (NT_SUCCESS(status)) {
            HIL_LOG(TAG, "connected to 127.0.0.1:%u", (unsigned)g_port);
            failure_logged = FALSE;
            backoff = BACKOFF_MIN_MS;
            status = RunSession(sock);
            HIL_LOG(TAG, "session ended 0x%08lx", (unsigned long)status);
        } else if (!failure_logged && !g_stop) {
            HIL_LOG(TAG, "cannot reach the collector: 0x%08lx (retrying)", (unsigned long)status);
            failure_logged = TRUE;
        }
        if (sock != NULL) {
            HilLock(&g_lock);
            g_sock = NULL;
            HilUnlock(&g_lock);
            KsockClose(sock);
        }
        if (g_stop || HilWaitMs(&g_stop_event, backoff) == STATUS_SUCCESS)
            break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    HIL_LOG(TAG, "network thread stopped");
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static VOID NTAPI DriverUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    InterlockedExchange(&g_stop, 1);
    KeSetEvent(&g_stop_event, IO_NO_INCREMENT, FALSE);
    /* Under the lock: the thread clears g_sock under it before closing the socket. */
    HilLock(&g_lock);
    if (g_sock != NULL)
        KsockShutdown(g_sock);
    HilUnlock(&g_lock);
    HilJoinThread(&g_thread);
    KsockCleanup();
    HIL_LOG(TAG, "unloaded");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    ULONG port;
    NTSTATUS status;

    HilLockInit(&g_lock);
    KeInitializeEvent(&g_stop_event, NotificationEvent, FALSE);
    port = HilReadParamDword(registry_path, L"CollectorPort", 0);
    if (port == 0 || port > 65535) {
        HIL_LOG(TAG, "Parameters\\CollectorPort is missing or not a port: %lu", (unsigned long)port);
        return STATUS_INVALID_PARAMETER;
    }
    g_port = (USHORT)port;
    status = KsockStartup();
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "WSK startup failed 0x%08lx", (unsigned long)status);
        return status;
    }
    status = HilStartThread(NetworkThread, NULL, &g_thread);
    if (!NT_SUCCESS(status)) {
        KsockCleanup();
        return status;
    }
    driver->DriverUnload = DriverUnload;
    HIL_LOG(TAG, "loaded, collector port %u", (unsigned)g_port);
    return STATUS_SUCCESS;
}
