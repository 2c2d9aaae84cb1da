/*
 * ksock.c - see ksock.h for the contract.
 *
 * Every WSK request follows one pattern (KspOpBegin, or KspOpBeginOn for a socket, / KspOpFinish):
 *   allocate an IRP with one stack location -> set a completion routine that signals a
 *   KEVENT and returns STATUS_MORE_PROCESSING_REQUIRED (so the I/O manager never frees our
 *   IRP) -> call the provider -> wait (with a deadline) -> read IoStatus -> IoFreeIrp.
 *
 * Calls into a socket's dispatch table are counted (Calls); KsockShutdown waits for running
 * calls to return (not for their IRPs to complete: closing completes those) before it calls
 * WskCloseSocket, as WSK requires.
 */
#include "ksock.h"

#define KSOCK_CHUNK (64 * 1024)
#define KSOCK_CANCEL_GRACE_MS 2000
#define KSOCK_PROVIDER_WAIT_MS 10000

struct _KSOCK {
    KSPIN_LOCK Lock;
    PWSK_SOCKET Wsk;        /* NULL once shut down */
    KSOCK_KIND Kind;
    LONG Calls;             /* dispatch calls in progress */
    BOOLEAN Closing;
    BOOLEAN Bound;
    KEVENT CallsDrained;    /* notification: Calls reached 0 while Closing */
    KEVENT ShutdownDone;    /* notification: the WSK socket is closed */
};

typedef struct _KSOCK_OP {
    KEVENT Done;
    PIRP Irp;
} KSOCK_OP;

/* Live object counters: KsockCleanup logs them, so a test can see that every IRP, MDL,
 * bounce buffer and socket made by the library was freed ("[ksock] cleanup: irps=0 ..."). */
static volatile LONG g_live_irps, g_live_mdls, g_live_buffers, g_live_sockets;

static WSK_REGISTRATION g_registration;
static WSK_PROVIDER_NPI g_provider;
static BOOLEAN g_registered;
static BOOLEAN g_captured;
static const WSK_CLIENT_DISPATCH g_client_dispatch = { MAKE_WSK_VERSION(1, 0), 0, NULL };

static NTSTATUS NTAPI KspCompletion(PDEVICE_OBJECT dev, PIRP irp, PVOID context)
{
    UNREFERENCED_PARAMETER(dev);
    UNREFERENCED_PARAMETER(irp);
    KeSetEvent((PKEVENT)context, IO_NO_INCREMENT, FALSE);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static VOID KspFreeIrp(PIRP irp)
{
    IoFreeIrp(irp);
    InterlockedDecrement(&g_live_irps);
}

static PVOID KspAllocBuffer(SIZE_T n)
{
    PVOID p = ExAllocatePoolWithTag(NonPagedPool, n, KSOCK_POOL_TAG);
    if (p)
        InterlockedIncrement(&g_live_buffers);
    return p;
}

static VOID KspFreeBuffer(PVOID p)
{
    ExFreePoolWithTag(p, KSOCK_POOL_TAG);
    InterlockedDecrement(&g_live_buffers);
}

static NTSTATUS KspOpBegin(KSOCK_OP *op)
{
    KeInitializeEvent(&op->Done, NotificationEvent, FALSE);
    op->Irp = IoAllocateIrp(1, FALSE);
    if (op->Irp == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    InterlockedIncrement(&g_live_irps);
    IoSetCompletionRoutine(op->Irp, KspCompletion, &op->Done, TRUE, TRUE, TRUE);
    return STATUS_SUCCESS;
}

static NTSTATUS KspWaitMs(PKEVENT ev, ULONG timeout_ms)
{
    LARGE_INTEGER t;
    if (timeout_ms == KSOCK_WAIT_FOREVER)
        return KeWaitForSingleObject(ev, Executive, KernelMode, FALSE, NULL);
    t.QuadPart = -10000LL * (LONGLONG)timeout_ms;
    return KeWaitForSingleObject(ev, Executive, KernelMode, FALSE, &t);
}

/*
 * Waits for the request to finish, frees the IRP and returns its final status.
 * call_status is what the provider function returned.
 */
static NTSTATUS KspOpFinish(PKSOCK sock, KSOCK_OP *op, NTSTATUS call_status, ULONG timeout_ms,
                            ULONG_PTR *information)
{
    NTSTATUS status;
    BOOLEAN timed_out = FALSE;

    if (information)
        *information = 0;

    if (call_status != STATUS_PENDING && KspWaitMs(&op->Done, 0) == STATUS_TIMEOUT) {
        /* The provider refused the request without completing the IRP (argument check). */
        KspFreeIrp(op->Irp);
        op->Irp = NULL;
        return NT_SUCCESS(call_status) ? STATUS_UNSUCCESSFUL : call_status;
    }

    if (KspWaitMs(&op->Done, timeout_ms) == STATUS_TIMEOUT) {
        timed_out = TRUE;
        IoCancelIrp(op->Irp);
        if (KspWaitMs(&op->Done, KSOCK_CANCEL_GRACE_MS) == STATUS_TIMEOUT && sock != NULL) {
            /* Provider ignores cancellation: closing the socket completes the request. */
            KsockShutdown(sock);
        }
        KeWaitForSingleObject(&op->Done, Executive, KernelMode, FALSE, NULL);
    }

    status = op->Irp->IoStatus.Status;
    if (information)
        *information = op->Irp->IoStatus.Information;
    KspFreeIrp(op->Irp);
    op->Irp = NULL;

    if (timed_out && !NT_SUCCESS(status))
        return STATUS_IO_TIMEOUT;
    return status;
}

/* Enter a dispatch call on sock; NULL when the socket is shut down. */
static PWSK_SOCKET KspEnter(PKSOCK sock)
{
    KIRQL irql;
    PWSK_SOCKET w = NULL;

    KeAcquireSpinLock(&sock->Lock, &irql);
    if (!sock->Closing && sock->Wsk != NULL) {
        sock->Calls++;
        w = sock->Wsk;
    }
    KeReleaseSpinLock(&sock->Lock, irql);
    return w;
}

static VOID KspLeave(PKSOCK sock)
{
    KIRQL irql;

    KeAcquireSpinLock(&sock->Lock, &irql);
    sock->Calls--;
    if (sock->Calls == 0 && sock->Closing)
        KeSetEvent(&sock->CallsDrained, IO_NO_INCREMENT, FALSE);
    KeReleaseSpinLock(&sock->Lock, irql);
}

/*
 * Start a request on sock: an IRP ready for the provider and the WSK socket to call, entered
 * (KspLeave after the provider call). When the socket is shut down the IRP is freed again.
 */
static NTSTATUS KspOpBeginOn(PKSOCK sock, KSOCK_OP *op, PWSK_SOCKET *w)
{
    NTSTATUS status = KspOpBegin(op);
    if (!NT_SUCCESS(status))
        return status;
    *w = KspEnter(sock);
    if (*w == NULL) {
        KspFreeIrp(op->Irp);
        op->Irp = NULL;
        return STATUS_CONNECTION_ABORTED;
    }
    return STATUS_SUCCESS;
}

static NTSTATUS KspCloseWsk(PWSK_SOCKET w)
{
    KSOCK_OP op;
    NTSTATUS status;
    const WSK_PROVIDER_BASIC_DISPATCH *d = (const WSK_PROVIDER_BASIC_DISPATCH *)w->Dispatch;

    status = KspOpBegin(&op);
    if (!NT_SUCCESS(status))
        return status; /* cannot close without an IRP; the provider reclaims it on deregister */
    status = d->WskCloseSocket(w, op.Irp);
    status = KspOpFinish(NULL, &op, status, KSOCK_WAIT_FOREVER, NULL);
    /* Even a failed close leaves the socket unusable: WSK has released it either way. */
    InterlockedDecrement(&g_live_sockets);
    return status;
}

static PKSOCK KspWrap(PWSK_SOCKET w, KSOCK_KIND kind)
{
    PKSOCK sock = (PKSOCK)KspAllocBuffer(sizeof(*sock));

    if (sock == NULL)
        return NULL;
    RtlZeroMemory(sock, sizeof(*sock));
    KeInitializeSpinLock(&sock->Lock);
    KeInitializeEvent(&sock->CallsDrained, NotificationEvent, FALSE);
    KeInitializeEvent(&sock->ShutdownDone, NotificationEvent, FALSE);
    sock->Wsk = w;
    sock->Kind = kind;
    return sock;
}

/* Take ownership of a socket WSK just created or accepted (the IRP's Information). */
static NTSTATUS KspAdopt(ULONG_PTR info, KSOCK_KIND kind, PKSOCK *out)
{
    PWSK_SOCKET w = (PWSK_SOCKET)info;
    PKSOCK sock;

    if (w == NULL)
        return STATUS_UNSUCCESSFUL;
    InterlockedIncrement(&g_live_sockets);
    sock = KspWrap(w, kind);
    if (sock == NULL) {
        KspCloseWsk(w);
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    *out = sock;
    return STATUS_SUCCESS;
}

static VOID KspFillAddr(PSOCKADDR_IN a, ULONG ip, USHORT port)
{
    RtlZeroMemory(a, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = __builtin_bswap16(port);
    a->sin_addr.s_addr = __builtin_bswap32(ip);
}

NTSTATUS KsockStartup(VOID)
{
    WSK_CLIENT_NPI npi;
    NTSTATUS status;

    if (g_captured)
        return STATUS_SUCCESS;
    npi.ClientContext = NULL;
    npi.Dispatch = &g_client_dispatch;
    status = WskRegister(&npi, &g_registration);
    if (!NT_SUCCESS(status))
        return status;
    g_registered = TRUE;
    status = WskCaptureProviderNPI(&g_registration, KSOCK_PROVIDER_WAIT_MS, &g_provider);
    if (!NT_SUCCESS(status)) {
        WskDeregister(&g_registration);
        g_registered = FALSE;
        return status;
    }
    g_captured = TRUE;
    return STATUS_SUCCESS;
}

VOID KsockCleanup(VOID)
{
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
               "[ksock] cleanup: irps=%ld mdls=%ld buffers=%ld sockets=%ld\n", g_live_irps,
               g_live_mdls, g_live_buffers, g_live_sockets);
    if (g_captured) {
        WskReleaseProviderNPI(&g_registration);
        g_captured = FALSE;
    }
    if (g_registered) {
        WskDeregister(&g_registration);
        g_registered = FALSE;
    }
}

NTSTATUS KsockCreate(PKSOCK *out, KSOCK_KIND kind)
{
    KSOCK_OP op;
    NTSTATUS status;
    ULONG_PTR info;
    ULONG flags;

    *out = NULL;
    if (!g_captured)
        return STATUS_DEVICE_NOT_READY;
    if (kind == KsockListenSocket)
        flags = WSK_FLAG_LISTEN_SOCKET;
    else if (kind == KsockConnectionSocket)
        flags = WSK_FLAG_CONNECTION_SOCKET;
    else
        return STATUS_INVALID_PARAMETER;

    status = KspOpBegin(&op);
    if (!NT_SUCCESS(status))
        return status;
    status = g_provider.Dispatch->WskSocket(g_provider.Client, AF_INET, SOCK_STREAM, IPPROTO_TCP,
                                            flags, NULL, NULL, NULL, NULL, NULL, op.Irp);
    status = KspOpFinish(NULL, &op, status, KSOCK_WAIT_FOREVER, &info);
    if (!NT_SUCCESS(status))
        return status;
    return KspAdopt(info, kind, out);
}

NTSTATUS KsockBind(PKSOCK sock, ULONG ip, USHORT port)
{
    SOCKADDR_IN addr;
    KSOCK_OP op;
    NTSTATUS status;
    PWSK_SOCKET w;

    status = KspOpBeginOn(sock, &op, &w);
    if (!NT_SUCCESS(status))
        return status;
    KspFillAddr(&addr, ip, port);
    if (sock->Kind == KsockListenSocket)
        status = ((const WSK_PROVIDER_LISTEN_DISPATCH *)w->Dispatch)
                     ->WskBind(w, (PSOCKADDR)&addr, 0, op.Irp);
    else
        status = ((const WSK_PROVIDER_CONNECTION_DISPATCH *)w->Dispatch)
                     ->WskBind(w, (PSOCKADDR)&addr, 0, op.Irp);
    KspLeave(sock);
    status = KspOpFinish(sock, &op, status, KSOCK_WAIT_FOREVER, NULL);
    if (NT_SUCCESS(status))
        sock->Bound = TRUE;
    return status;
}

NTSTATUS KsockListen(PKSOCK sock)
{
    if (sock->Kind != KsockListenSocket)
        return STATUS_INVALID_PARAMETER;
    if (!sock->Bound)
        return STATUS_INVALID_DEVICE_STATE;
    return STATUS_SUCCESS;
}

NTSTATUS KsockAccept(PKSOCK listener, PKSOCK *accepted, PSOCKADDR_IN remote, ULONG timeout_ms)
{
    SOCKADDR_IN local, peer;
    KSOCK_OP op;
    NTSTATUS status;
    ULONG_PTR info;
    PWSK_SOCKET w;
    PKSOCK sock;

    *accepted = NULL;
    if (listener->Kind != KsockListenSocket || !listener->Bound)
        return STATUS_INVALID_DEVICE_STATE;
    status = KspOpBeginOn(listener, &op, &w);
    if (!NT_SUCCESS(status))
        return status;
    RtlZeroMemory(&local, sizeof(local));
    RtlZeroMemory(&peer, sizeof(peer));
    status = ((const WSK_PROVIDER_LISTEN_DISPATCH *)w->Dispatch)
                 ->WskAccept(w, 0, NULL, NULL, (PSOCKADDR)&local, (PSOCKADDR)&peer, op.Irp);
    KspLeave(listener);
    status = KspOpFinish(listener, &op, status, timeout_ms, &info);
    if (!NT_SUCCESS(status))
        return status;
    status = KspAdopt(info, KsockConnectionSocket, &sock);
    if (!NT_SUCCESS(status))
        return status;
    sock->Bound = TRUE;
    if (remote)
        *remote = peer;
    *accepted = sock;
    return STATUS_SUCCESS;
}

NTSTATUS KsockConnect(PKSOCK sock, ULONG ip, USHORT port, ULONG timeout_ms)
{
    SOCKADDR_IN addr;
    KSOCK_OP op;
    NTSTATUS status;
    PWSK_SOCKET w;

    if (sock->Kind != KsockConnectionSocket)
        return STATUS_INVALID_PARAMETER;
    if (!sock->Bound) {
        status = KsockBind(sock, 0, 0);
        if (!NT_SUCCESS(status))
            return status;
    }
    status = KspOpBeginOn(sock, &op, &w);
    if (!NT_SUCCESS(status))
        return status;
    KspFillAddr(&addr, ip, port);
    status = ((const WSK_PROVIDER_CONNECTION_DISPATCH *)w->Dispatch)
                 ->WskConnect(w, (PSOCKADDR)&addr, 0, op.Irp);
    KspLeave(sock);
    return KspOpFinish(sock, &op, status, timeout_ms, NULL);
}

static VOID KspFreeMdl(PMDL mdl)
{
    IoFreeMdl(mdl);
    InterlockedDecrement(&g_live_mdls);
}

/* One WskSend/WskReceive of at most KSOCK_CHUNK bytes through a non-paged bounce buffer. */
static NTSTATUS KspTransfer(PKSOCK sock, BOOLEAN is_send, PVOID bounce, SIZE_T len,
                            SIZE_T *done, ULONG timeout_ms)
{
    const WSK_PROVIDER_CONNECTION_DISPATCH *d;
    WSK_BUF wb;
    KSOCK_OP op;
    NTSTATUS status;
    ULONG_PTR info;
    PWSK_SOCKET w;
    PMDL mdl;

    *done = 0;
    mdl = IoAllocateMdl(bounce, (ULONG)len, FALSE, FALSE, NULL);
    if (mdl == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    InterlockedIncrement(&g_live_mdls);
    MmBuildMdlForNonPagedPool(mdl);
    status = KspOpBeginOn(sock, &op, &w);
    if (!NT_SUCCESS(status)) {
        KspFreeMdl(mdl);
        return status;
    }
    wb.Mdl = mdl;
    wb.Offset = 0;
    wb.Length = len;
    d = (const WSK_PROVIDER_CONNECTION_DISPATCH *)w->Dispatch;
    status = is_send ? d->WskSend(w, &wb, 0, op.Irp) : d->WskReceive(w, &wb, 0, op.Irp);
    KspLeave(sock);
    status = KspOpFinish(sock, &op, status, timeout_ms, &info);
    KspFreeMdl(mdl); /* the IRP is complete: nobody references the MDL any more */
    if (NT_SUCCESS(status)) {
        if (info > len)
            return STATUS_INTERNAL_ERROR;
        *done = (SIZE_T)info;
    }
    return status;
}

/* Remaining milliseconds before deadline (interrupt time, 100 ns units). */
static ULONG KspRemaining(ULONGLONG deadline, ULONG timeout_ms)
{
    ULONGLONG now;
    if (timeout_ms == KSOCK_WAIT_FOREVER)
        return KSOCK_WAIT_FOREVER;
    now = KeQueryInterruptTime();
    if (now >= deadline)
        return 0;
    return (ULONG)((deadline - now) / 10000ULL);
}

static ULONGLONG KspDeadline(ULONG timeout_ms)
{
    if (timeout_ms == KSOCK_WAIT_FOREVER)
        return 0;
    return KeQueryInterruptTime() + 10000ULL * timeout_ms;
}

NTSTATUS KsockSend(PKSOCK sock, const VOID *buf, SIZE_T len, ULONG timeout_ms)
{
    const UCHAR *p = (const UCHAR *)buf;
    ULONGLONG deadline = KspDeadline(timeout_ms);
    NTSTATUS status = STATUS_SUCCESS;
    PVOID bounce;

    if (len == 0)
        return STATUS_SUCCESS;
    bounce = KspAllocBuffer(len < KSOCK_CHUNK ? len : KSOCK_CHUNK);
    if (bounce == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    while (len > 0) {
        SIZE_T n = len < KSOCK_CHUNK ? len : KSOCK_CHUNK, sent;
        ULONG left = KspRemaining(deadline, timeout_ms);
        if (left == 0) {
            status = STATUS_IO_TIMEOUT;
            break;
        }
        RtlCopyMemory(bounce, p, n);
        status = KspTransfer(sock, TRUE, bounce, n, &sent, left);
        if (!NT_SUCCESS(status))
            break;
        if (sent == 0) {
            status = STATUS_CONNECTION_DISCONNECTED;
            break;
        }
        p += sent;
        len -= sent;
    }
    KspFreeBuffer(bounce);
    return status;
}

NTSTATUS KsockReceive(PKSOCK sock, PVOID buf, SIZE_T len, SIZE_T *received, ULONG timeout_ms)
{
    NTSTATUS status;
    PVOID bounce;
    SIZE_T n = len < KSOCK_CHUNK ? len : KSOCK_CHUNK;

    *received = 0;
    if (len == 0)
        return STATUS_SUCCESS;
    bounce = KspAllocBuffer(n);
    if (bounce == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    status = KspTransfer(sock, FALSE, bounce, n, received, timeout_ms);
    if (NT_SUCCESS(status) && *received > 0)
        RtlCopyMemory(buf, bounce, *received);
    KspFreeBuffer(bounce);
    return status;
}

NTSTATUS KsockReceiveAll(PKSOCK sock, PVOID buf, SIZE_T len, ULONG timeout_ms)
{
    UCHAR *p = (UCHAR *)buf;
    ULONGLONG deadline = KspDeadline(timeout_ms);

    while (len > 0) {
        SIZE_T got;
        NTSTATUS status;
        ULONG left = KspRemaining(deadline, timeout_ms);
        if (left == 0)
            return STATUS_IO_TIMEOUT;
        status = KsockReceive(sock, p, len, &got, left);
        if (!NT_SUCCESS(status))
            return status;
        if (got == 0)
            return STATUS_CONNECTION_DISCONNECTED;
        p += got;
        len -= got;
    }
    return STATUS_SUCCESS;
}

VOID KsockShutdown(PKSOCK sock)
{
    KIRQL irql;
    PWSK_SOCKET w;
    BOOLEAN first, drained;

    KeAcquireSpinLock(&sock->Lock, &irql);
    first = !sock->Closing;
    sock->Closing = TRUE;
    w = sock->Wsk;
    sock->Wsk = NULL;
    drained = (sock->Calls == 0);
    KeReleaseSpinLock(&sock->Lock, irql);

    if (!first) {
        /* Someone else is closing it: return once it is really closed. */
        KeWaitForSingleObject(&sock->ShutdownDone, Executive, KernelMode, FALSE, NULL);
        return;
    }
    if (!drained)
        KeWaitForSingleObject(&sock->CallsDrained, Executive, KernelMode, FALSE, NULL);
    if (w != NULL)
        KspCloseWsk(w);
    KeSetEvent(&sock->ShutdownDone, IO_NO_INCREMENT, FALSE);
}

VOID KsockClose(PKSOCK sock)
{
    if (sock == NULL)
        return;
    KsockShutdown(sock);
    KspFreeBuffer(sock);
}
