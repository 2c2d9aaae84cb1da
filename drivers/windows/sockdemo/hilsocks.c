/*
 * hilsocks.sys - demo WSK echo server built on ksock.
 *
 * Listens on 127.0.0.1:<Parameters\Port> (default 50007) in a system thread, accepts one
 * connection at a time and echoes what it receives until the peer closes.  DriverUnload
 * shuts the listening and the current connection sockets down, which completes the pending
 * accept/receive, then joins the thread: no request, IRP or socket outlives the driver.
 */
#include <ntddk.h>
#include "../ksock/ksock.h"
#include "../common/hilkm.h"

#define TAG "hilsocks"
#define ECHO_TIMEOUT_MS 30000

static PKSOCK g_listener;
static PKSOCK g_conn;          /* current connection; guarded by g_lock */
static HIL_LOCK g_lock;
static volatile LONG g_stop;
static PETHREAD g_thread;
static USHORT g_port;

static VOID ServeConnection(PKSOCK conn)
{
    UCHAR buf[512];
    ULONG total = 0;

    for (;;) {
        SIZE_T got = 0;
        NTSTATUS status = KsockReceive(conn, buf, sizeof(buf), &got, ECHO_TIMEOUT_MS);
        if (!NT_SUCCESS(status)) {
            HIL_LOG(TAG, "receive failed 0x%08lx", (unsigned long)status);
            break;
        }
        if (got == 0)
            break;
        status = KsockSend(conn, buf, got, ECHO_TIMEOUT_MS);
        if (!NT_SUCCESS(status)) {
            HIL_LOG(TAG, "send failed 0x%08lx", (unsigned long)status);
            break;
        }
        total += (ULONG)got;
    }
    HIL_LOG(TAG, "connection closed after %lu bytes", (unsigned long)total);
}

static VOID NTAPI ServerThread(PVOID context)
{
    UNREFERENCED_PARAMETER(context);

    while (!g_stop) {
        SOCKADDR_IN peer;
        PKSOCK conn = NULL;
        NTSTATUS status = KsockAccept(g_listener, &conn, &peer, KSOCK_WAIT_FOREVER);

        if (!NT_SUCCESS(status)) {
            if (!g_stop)
                HIL_LOG(TAG, "accept failed 0x%08lx", (unsigned long)status);
            break;
        }
        HilLock(&g_lock);
        g_conn = conn;
        HilUnlock(&g_lock);
        if (g_stop)
            KsockShutdown(conn);

        HIL_LOG(TAG, "accepted connection");
        ServeConnection(conn);

        HilLock(&g_lock);
        g_conn = NULL;
        HilUnlock(&g_lock);
        KsockClose(conn);
    }
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static VOID NTAPI DriverUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    InterlockedExchange(&g_stop, 1);
    KsockShutdown(g_listener);   /* completes the pending accept */
    /* Shut down under the lock: the thread frees a connection only after clearing g_conn under
     * the same lock, so it cannot be freed while we use it. */
    HilLock(&g_lock);
    if (g_conn)
        KsockShutdown(g_conn);
    HilUnlock(&g_lock);
    HilJoinThread(&g_thread);
    KsockClose(g_listener);
    g_listener = NULL;
    KsockCleanup();
    HIL_LOG(TAG, "unloaded");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    NTSTATUS status;

    HilLockInit(&g_lock);
    g_port = (USHORT)HilReadParamDword(registry_path, L"Port", 50007);

    status = KsockStartup();
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "WSK startup failed 0x%08lx", (unsigned long)status);
        return status;
    }
    status = KsockCreate(&g_listener, KsockListenSocket);
    if (NT_SUCCESS(status))
        status = KsockBind(g_listener, KSOCK_IPV4(127, 0, 0, 1), g_port);
    if (NT_SUCCESS(status))
        status = KsockListen(g_listener);
    if (NT_SUCCESS(status))
        status = HilStartThread(ServerThread, NULL, &g_thread);
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "start failed 0x%08lx", (unsigned long)status);
        if (g_listener) {
            InterlockedExchange(&g_stop, 1);
            KsockShutdown(g_listener);
            HilJoinThread(&g_thread);
            KsockClose(g_listener);
            g_listener = NULL;
        }
        KsockCleanup();
        return status;
    }
    driver->DriverUnload = DriverUnload;
    HIL_LOG(TAG, "listening on 127.0.0.1:%u", (unsigned)g_port);
    return STATUS_SUCCESS;
}
