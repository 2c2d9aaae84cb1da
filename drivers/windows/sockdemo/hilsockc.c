/*
 * hilsockc.sys - demo WSK client built on ksock.
 *
 * At load it starts a system thread that connects to 127.0.0.1:<Parameters\Port>
 * (default 50008), sends "hello from hilsockc\n", reads the reply (up to 256 bytes, 10 s) and
 * logs it as "[hilsockc] reply: <text>", then closes ("[hilsockc] done <status>").
 * Parameters\TimeoutMs bounds each step.  Unload shuts the socket down and joins the thread,
 * so a hung server never keeps the driver from unloading.
 *
 * Test knobs: Parameters\Repeat (default 1) runs the whole round that many times in one load
 * (then logs "[hilsockc] finished <n> of <Repeat> rounds"); Parameters\CancelGraceMs
 * overrides ksock's cancel grace (KsockSetCancelGraceMs).
 */
#include <ntddk.h>
#include "../ksock/ksock.h"
#include "../common/hilkm.h"

#define TAG "hilsockc"
#define CLIENT_TIMEOUT_MS 10000 /* default of Parameters\TimeoutMs */

static PKSOCK g_sock;          /* guarded by g_lock */
static HIL_LOCK g_lock;
static PETHREAD g_thread;
static volatile LONG g_stop;
static USHORT g_port;
static ULONG g_timeout_ms;
static ULONG g_repeat;

/* One round: connect, send the greeting, log the reply, close ("done <status>"). */
static VOID ClientRound(VOID)
{
    static const char hello[] = "hello from hilsockc\n";
    char reply[257];
    SIZE_T got = 0;
    PKSOCK sock = NULL;
    NTSTATUS status;

    status = KsockCreate(&sock, KsockConnectionSocket);
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "socket failed 0x%08lx", (unsigned long)status);
        goto out;
    }
    HilLock(&g_lock);
    g_sock = sock;
    HilUnlock(&g_lock);
    if (g_stop) {
        status = STATUS_CANCELLED;
        goto out;
    }

    status = KsockConnect(sock, KSOCK_IPV4(127, 0, 0, 1), g_port, g_timeout_ms);
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "connect failed 0x%08lx", (unsigned long)status);
        goto out;
    }
    HIL_LOG(TAG, "connected to 127.0.0.1:%u", (unsigned)g_port);
    status = KsockSend(sock, hello, sizeof(hello) - 1, g_timeout_ms);
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "send failed 0x%08lx", (unsigned long)status);
        goto out;
    }
    status = KsockReceive(sock, reply, sizeof(reply) - 1, &got, g_timeout_ms);
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "receive failed 0x%08lx", (unsigned long)status);
        goto out;
    }
    reply[got] = '\0';
    /* The reply is untrusted: print it bounded and as a string argument, never as format. */
    HIL_LOG(TAG, "reply: %.256s", reply);

out:
    HilLock(&g_lock);
    g_sock = NULL;
    HilUnlock(&g_lock);
    KsockClose(sock);
    HIL_LOG(TAG, "done 0x%08lx", (unsigned long)status);
}

static VOID NTAPI ClientThread(PVOID context)
{
    ULONG round;

    UNREFERENCED_PARAMETER(context);
    for (round = 0; round < g_repeat && !g_stop; round++)
        ClientRound();
    if (g_repeat > 1)
        HIL_LOG(TAG, "finished %lu of %lu rounds", (unsigned long)round, (unsigned long)g_repeat);
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static VOID NTAPI DriverUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    InterlockedExchange(&g_stop, 1);
    /* Shut down under the lock: the thread frees the socket only after clearing g_sock under
     * the same lock, so the socket cannot be freed while we use it. */
    HilLock(&g_lock);
    if (g_sock)
        KsockShutdown(g_sock);
    HilUnlock(&g_lock);
    HilJoinThread(&g_thread);
    KsockCleanup();
    HIL_LOG(TAG, "unloaded");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    NTSTATUS status;

    HilLockInit(&g_lock);
    g_port = (USHORT)HilReadParamDword(registry_path, L"Port", 50008);
    g_timeout_ms = HilReadParamDword(registry_path, L"TimeoutMs", CLIENT_TIMEOUT_MS);
    g_repeat = HilReadParamDword(registry_path, L"Repeat", 1);
    KsockSetCancelGraceMs(HilReadParamDword(registry_path, L"CancelGraceMs", 2000));
    status = KsockStartup();
    if (!NT_SUCCESS(status)) {
        HIL_LOG(TAG, "WSK startup failed 0x%08lx", (unsigned long)status);
        return status;
    }
    status = HilStartThread(ClientThread, NULL, &g_thread);
    if (!NT_SUCCESS(status)) {
        KsockCleanup();
        return status;
    }
    driver->DriverUnload = DriverUnload;
    return STATUS_SUCCESS;
}
