/*
 * ksock.c - see ksock.h for the contract.
 *
 * Every WSK request follows one pattern (KspOpBegin / KspRequest on a socket / KspOpFinish):
 *   allocate an IRP with one stack location -> set a completion routine that signals a
 *   KEVENT and returns STATUS_MORE_PROCESSING_REQUIRED (so the I/O manager never frees our
 *   IRP) -> call the provider -> wait (with a deadline) -> read IoStatus -> IoFreeIrp.
 *
 * Requests on a socket are started by the socket's issuer thread, not by the caller: the
 * caller queues the request, the issuer makes the provider call, the caller waits for the
 * IRP as before.  The reason is cancellation, and closing safely:
 *  - A socket is closed (WskCloseSocket) only once none of its IRPs is pending.  Wine's netio
 *    (8.0) frees its socket in WskCloseSocket while the threadpool callback of a cancelled
 *    receive may still be queued; the callback then runs on the freed (often already reused)
 *    socket and crashes winedevice.exe ("fixme:netio:find_pending_io Pending io not found",
 *    then a NULL read in send_receive_callback), or corrupts its heap.
 *  - To get pending IRPs completed, KsockShutdown calls IoCancelIrp on each (what Windows'
 *    WSK honours) and then ends the issuer thread: Wine ignores IoCancelIrp (no cancel
 *    routine) but, like Windows for thread-bound I/O, cancels the I/O a thread started when
 *    the thread exits, and netio then completes the IRPs with STATUS_CANCELLED through its
 *    normal path while the socket is still open.  On Windows the thread's exit changes
 *    nothing (our IRPs are not thread-bound).  Only if the IRPs still do not complete within
 *    KSOCK_DRAIN_MS is the socket closed with them pending (and that is logged).
 *
 * Calls counts requests queued or being issued; KsockShutdown waits for those, then cancels
 * and drains the pending IRPs (PendingIrps, Pending list), then closes.
 */
#include "ksock.h"
#include "../common/hilkm.h"

#define KSOCK_CHUNK (64 * 1024)
#define KSOCK_CANCEL_GRACE_MS 2000 /* default of g_cancel_grace_ms */
#define KSOCK_DRAIN_MS 5000        /* shutdown: cancelled IRPs must complete within this */
#define KSOCK_PROVIDER_WAIT_MS 10000

typedef enum _KSP_CALL {
    KspCallBind = 1,
    KspCallConnect,
    KspCallAccept,
    KspCallSend,
    KspCallReceive
} KSP_CALL;

typedef struct _KSOCK_OP {
    KEVENT Done;            /* the IRP completed */
    PIRP Irp;
    PKSOCK Sock;            /* the socket for a socket request; NULL for provider-level ones */
    LIST_ENTRY Link;        /* in Sock->Queue until issued, then in Sock->Pending until finished */
    BOOLEAN Listed;         /* Link is in Sock->Pending (under Sock->Lock) */
    /* the provider call the issuer makes */
    KSP_CALL Call;
    PWSK_SOCKET Wsk;
    PSOCKADDR Addr;         /* bind/connect: the address; accept: the local address */
    PSOCKADDR Remote;       /* accept */
    PWSK_BUF Buf;           /* send/receive */
    NTSTATUS CallStatus;    /* what the provider call returned */
    KEVENT Issued;          /* the provider call returned */
} KSOCK_OP;

struct _KSOCK {
    KSPIN_LOCK Lock;
    PWSK_SOCKET Wsk;        /* NULL once shut down */
    KSOCK_KIND Kind;
    LONG Calls;             /* requests queued for or being issued by the issuer */
    BOOLEAN Closing;
    BOOLEAN Bound;
    BOOLEAN IssuerStop;     /* the issuer exits once Queue is empty */
    KEVENT CallsDrained;    /* notification: Calls reached 0 while Closing */
    KEVENT ShutdownDone;    /* notification: the WSK socket is closed */
    PETHREAD Issuer;        /* makes every provider call on this socket (see the top) */
    KEVENT QueueReady;      /* synchronization: Queue got a request, or IssuerStop was set */
    LIST_ENTRY Queue;       /* KSOCK_OP.Link, requests waiting for the issuer; under Lock */
    LIST_ENTRY Pending;     /* KSOCK_OP.Link, requests given to the provider; under Lock */
    volatile LONG PendingIrps; /* IRPs given to the provider and not completed */
    KEVENT PendingDrained;  /* set by whoever takes PendingIrps to 0 */
};

/* Live object counters: KsockCleanup logs them, so a test can see that every IRP, MDL,
 * bounce buffer and socket made by the library was freed ("[ksock] cleanup: irps=0 ..."). */
static volatile LONG g_live_irps, g_live_mdls, g_live_buffers, g_live_sockets;

static WSK_REGISTRATION g_registration;
static WSK_PROVIDER_NPI g_provider;
static BOOLEAN g_registered;
static BOOLEAN g_captured;
static const WSK_CLIENT_DISPATCH g_client_dispatch = { MAKE_WSK_VERSION(1, 0), 0, NULL };
static volatile ULONG g_cancel_grace_ms = KSOCK_CANCEL_GRACE_MS;

static VOID KspIrpGone(PKSOCK sock)
{
    if (InterlockedDecrement(&sock->PendingIrps) == 0)
        KeSetEvent(&sock->PendingDrained, IO_NO_INCREMENT, FALSE);
}

VOID KsockSetCancelGraceMs(ULONG ms)
{
    InterlockedExchange((volatile LONG *)&g_cancel_grace_ms, (LONG)ms);
}

static NTSTATUS NTAPI KspCompletion(PDEVICE_OBJECT dev, PIRP irp, PVOID context)
{
    KSOCK_OP *op = (KSOCK_OP *)context;
    PKSOCK sock = op->Sock;

    UNREFERENCED_PARAMETER(dev);
    UNREFERENCED_PARAMETER(irp);
    /* Takes no lock: KsockShutdown calls IoCancelIrp under sock->Lock, and a provider may
     * complete the IRP from its cancel routine. */
    if (sock != NULL)
        KspIrpGone(sock);
    KeSetEvent(&op->Done, IO_NO_INCREMENT, FALSE); /* op may be gone once this returns */
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

/* sock: the socket the request is on (KspRequest), or NULL for a provider-level request. */
static NTSTATUS KspOpBegin(KSOCK_OP *op, PKSOCK sock)
{
    RtlZeroMemory(op, sizeof(*op));
    KeInitializeEvent(&op->Done, NotificationEvent, FALSE);
    KeInitializeEvent(&op->Issued, NotificationEvent, FALSE);
    op->Sock = sock;
    op->Irp = IoAllocateIrp(1, FALSE);
    if (op->Irp == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    InterlockedIncrement(&g_live_irps);
    IoSetCompletionRoutine(op->Irp, KspCompletion, op, TRUE, TRUE, TRUE);
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

/* The request's IRP is back (completed, or refused when refused is TRUE): off the Pending list. */
static VOID KspUnlist(KSOCK_OP *op, BOOLEAN refused)
{
    PKSOCK sock = op->Sock;
    KIRQL irql;

    if (sock == NULL || !op->Listed)
        return;
    KeAcquireSpinLock(&sock->Lock, &irql);
    RemoveEntryList(&op->Link);
    op->Listed = FALSE;
    KeReleaseSpinLock(&sock->Lock, irql);
    if (refused)
        KspIrpGone(sock); /* counted when issued, never completed */
}

/*
 * Waits for the request to finish, frees the IRP and returns its final status.
 * call_status is what the provider function returned.
 */
static NTSTATUS KspOpFinish(KSOCK_OP *op, NTSTATUS call_status, ULONG timeout_ms,
                            ULONG_PTR *information)
{
    PKSOCK sock = op->Sock;
    NTSTATUS status;
    BOOLEAN timed_out = FALSE;

    if (information)
        *information = 0;

    if (call_status != STATUS_PENDING && KspWaitMs(&op->Done, 0) == STATUS_TIMEOUT) {
        /* The provider refused the request without completing the IRP (argument check). */
        KspUnlist(op, TRUE);
        KspFreeIrp(op->Irp);
        op->Irp = NULL;
        return NT_SUCCESS(call_status) ? STATUS_UNSUCCESSFUL : call_status;
    }

    if (KspWaitMs(&op->Done, timeout_ms) == STATUS_TIMEOUT) {
        timed_out = TRUE;
        IoCancelIrp(op->Irp);
        if (KspWaitMs(&op->Done, g_cancel_grace_ms) == STATUS_TIMEOUT && sock != NULL) {
            /* The provider ignores IoCancelIrp (Wine's netio): shutting the socket down
             * completes the request (by ending the issuer thread, else by closing). */
            KsockShutdown(sock);
        }
        KeWaitForSingleObject(&op->Done, Executive, KernelMode, FALSE, NULL);
    }
    KspUnlist(op, FALSE);

    status = op->Irp->IoStatus.Status;
    if (status == STATUS_PENDING)
        status = STATUS_UNSUCCESSFUL; /* a completed IRP cannot be pending */
    if (information)
        *information = op->Irp->IoStatus.Information;
    KspFreeIrp(op->Irp);
    op->Irp = NULL;

    if (timed_out && !NT_SUCCESS(status))
        return STATUS_IO_TIMEOUT;
    return status;
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

/* The provider call for op (made by the issuer thread). */
static NTSTATUS KspCall(KSOCK_OP *op)
{
    PWSK_SOCKET w = op->Wsk;
    const WSK_PROVIDER_LISTEN_DISPATCH *l = (const WSK_PROVIDER_LISTEN_DISPATCH *)w->Dispatch;
    const WSK_PROVIDER_CONNECTION_DISPATCH *c =
        (const WSK_PROVIDER_CONNECTION_DISPATCH *)w->Dispatch;

    switch (op->Call) {
    case KspCallBind:
        if (op->Sock->Kind == KsockListenSocket)
            return l->WskBind(w, op->Addr, 0, op->Irp);
        return c->WskBind(w, op->Addr, 0, op->Irp);
    case KspCallConnect:
        return c->WskConnect(w, op->Addr, 0, op->Irp);
    case KspCallAccept:
        return l->WskAccept(w, 0, NULL, NULL, op->Addr, op->Remote, op->Irp);
    case KspCallSend:
        return c->WskSend(w, op->Buf, 0, op->Irp);
    case KspCallReceive:
        return c->WskReceive(w, op->Buf, 0, op->Irp);
    }
    return STATUS_INVALID_PARAMETER; /* the IRP was not given to the provider */
}

/* The socket's issuer: makes the provider calls queued on sock until told to stop. */
static VOID NTAPI KspIssuerThread(PVOID context)
{
    PKSOCK sock = (PKSOCK)context;

    for (;;) {
        KSOCK_OP *op = NULL;
        BOOLEAN stop;
        KIRQL irql;

        KeAcquireSpinLock(&sock->Lock, &irql);
        if (!IsListEmpty(&sock->Queue)) {
            op = CONTAINING_RECORD(RemoveHeadList(&sock->Queue), KSOCK_OP, Link);
            /* Pending before the call: the IRP may complete inside it. */
            InsertTailList(&sock->Pending, &op->Link);
            op->Listed = TRUE;
            InterlockedIncrement(&sock->PendingIrps);
        }
        stop = sock->IssuerStop;
        KeReleaseSpinLock(&sock->Lock, irql);

        if (op != NULL) {
            op->CallStatus = KspCall(op);
            KeSetEvent(&op->Issued, IO_NO_INCREMENT, FALSE);
        } else if (stop) {
            break;
        } else {
            KeWaitForSingleObject(&sock->QueueReady, Executive, KernelMode, FALSE, NULL);
        }
    }
    /* Under Wine this exit cancels whatever this thread started (see the top of the file). */
    PsTerminateSystemThread(STATUS_SUCCESS);
}

/*
 * Runs a request on sock: op (from KspOpBegin(op, sock)) with Call and its arguments set is
 * handed to the issuer, then waited for like any other (KspOpFinish).  Once the socket is shut
 * down the request is not issued and STATUS_CONNECTION_ABORTED is returned.
 */
static NTSTATUS KspRequest(PKSOCK sock, KSOCK_OP *op, ULONG timeout_ms, ULONG_PTR *information)
{
    KIRQL irql;
    BOOLEAN queued = FALSE;

    if (information)
        *information = 0;
    KeAcquireSpinLock(&sock->Lock, &irql);
    if (!sock->Closing && sock->Wsk != NULL && sock->Issuer != NULL) {
        sock->Calls++;
        op->Wsk = sock->Wsk;
        InsertTailList(&sock->Queue, &op->Link);
        queued = TRUE;
    }
    KeReleaseSpinLock(&sock->Lock, irql);
    if (!queued) {
        KspFreeIrp(op->Irp);
        op->Irp = NULL;
        return STATUS_CONNECTION_ABORTED;
    }
    KeSetEvent(&sock->QueueReady, IO_NO_INCREMENT, FALSE);
    KeWaitForSingleObject(&op->Issued, Executive, KernelMode, FALSE, NULL);
    KspLeave(sock);
    return KspOpFinish(op, op->CallStatus, timeout_ms, information);
}

static NTSTATUS KspCloseWsk(PWSK_SOCKET w)
{
    KSOCK_OP op;
    NTSTATUS status;
    const WSK_PROVIDER_BASIC_DISPATCH *d = (const WSK_PROVIDER_BASIC_DISPATCH *)w->Dispatch;

    status = KspOpBegin(&op, NULL);
    if (!NT_SUCCESS(status))
        return status; /* cannot close without an IRP; the provider reclaims it on deregister */
    status = d->WskCloseSocket(w, op.Irp);
    status = KspOpFinish(&op, status, KSOCK_WAIT_FOREVER, NULL);
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
    KeInitializeEvent(&sock->QueueReady, SynchronizationEvent, FALSE);
    KeInitializeEvent(&sock->PendingDrained, NotificationEvent, FALSE);
    InitializeListHead(&sock->Queue);
    InitializeListHead(&sock->Pending);
    sock->Wsk = w;
    sock->Kind = kind;
    if (!NT_SUCCESS(HilStartThread(KspIssuerThread, sock, &sock->Issuer))) {
        /* HilStartThread can fail with the thread running (unreferenced, on exhaustion): tell
         * it to exit, and leave the wrapper to it rather than free memory it may still read
         * (the leak shows in the cleanup counters). */
        sock->IssuerStop = TRUE;
        KeSetEvent(&sock->QueueReady, IO_NO_INCREMENT, FALSE);
        return NULL;
    }
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

    status = KspOpBegin(&op, NULL);
    if (!NT_SUCCESS(status))
        return status;
    status = g_provider.Dispatch->WskSocket(g_provider.Client, AF_INET, SOCK_STREAM, IPPROTO_TCP,
                                            flags, NULL, NULL, NULL, NULL, NULL, op.Irp);
    status = KspOpFinish(&op, status, KSOCK_WAIT_FOREVER, &info);
    if (!NT_SUCCESS(status))
        return status;
    return KspAdopt(info, kind, out);
}

NTSTATUS KsockBind(PKSOCK sock, ULONG ip, USHORT port)
{
    SOCKADDR_IN addr;
    KSOCK_OP op;
    NTSTATUS status;

    status = KspOpBegin(&op, sock);
    if (!NT_SUCCESS(status))
        return status;
    KspFillAddr(&addr, ip, port);
    op.Call = KspCallBind;
    op.Addr = (PSOCKADDR)&addr;
    status = KspRequest(sock, &op, KSOCK_WAIT_FOREVER, NULL);
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
    PKSOCK sock;

    *accepted = NULL;
    if (listener->Kind != KsockListenSocket || !listener->Bound)
        return STATUS_INVALID_DEVICE_STATE;
    status = KspOpBegin(&op, listener);
    if (!NT_SUCCESS(status))
        return status;
    RtlZeroMemory(&local, sizeof(local));
    RtlZeroMemory(&peer, sizeof(peer));
    op.Call = KspCallAccept;
    op.Addr = (PSOCKADDR)&local;
    op.Remote = (PSOCKADDR)&peer;
    status = KspRequest(listener, &op, timeout_ms, &info);
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

    if (sock->Kind != KsockConnectionSocket)
        return STATUS_INVALID_PARAMETER;
    if (!sock->Bound) {
        status = KsockBind(sock, 0, 0);
        if (!NT_SUCCESS(status))
            return status;
    }
    status = KspOpBegin(&op, sock);
    if (!NT_SUCCESS(status))
        return status;
    KspFillAddr(&addr, ip, port);
    op.Call = KspCallConnect;
    op.Addr = (PSOCKADDR)&addr;
    return KspRequest(sock, &op, timeout_ms, NULL);
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
    WSK_BUF wb;
    KSOCK_OP op;
    NTSTATUS status;
    ULONG_PTR info;
    PMDL mdl;

    *done = 0;
    mdl = IoAllocateMdl(bounce, (ULONG)len, FALSE, FALSE, NULL);
    if (mdl == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    InterlockedIncrement(&g_live_mdls);
    MmBuildMdlForNonPagedPool(mdl);
    status = KspOpBegin(&op, sock);
    if (!NT_SUCCESS(status)) {
        KspFreeMdl(mdl);
        return status;
    }
    wb.Mdl = mdl;
    wb.Offset = 0;
    wb.Length = len;
    op.Call = is_send ? KspCallSend : KspCallReceive;
    op.Buf = &wb;
    status = KspRequest(sock, &op, timeout_ms, &info);
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

/* Waits up to timeout_ms for sock's pending IRPs to complete; returns how many did not. */
static LONG KspDrain(PKSOCK sock, ULONG timeout_ms)
{
    ULONGLONG deadline = KspDeadline(timeout_ms);

    for (;;) {
        LONG left;
        ULONG ms;

        /* Nothing is issued any more, so PendingIrps only goes down: clear, re-check, wait. */
        KeClearEvent(&sock->PendingDrained);
        left = InterlockedCompareExchange(&sock->PendingIrps, 0, 0);
        if (left == 0)
            return 0;
        ms = KspRemaining(deadline, timeout_ms);
        if (ms == 0 || KspWaitMs(&sock->PendingDrained, ms) == STATUS_TIMEOUT)
            return InterlockedCompareExchange(&sock->PendingIrps, 0, 0);
    }
}

VOID KsockShutdown(PKSOCK sock)
{
    KIRQL irql;
    PWSK_SOCKET w;
    PLIST_ENTRY e;
    BOOLEAN first, drained;
    LONG left;

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

    /* Nothing new is issued now.  Cancel what the provider holds, the way Windows honours... */
    KeAcquireSpinLock(&sock->Lock, &irql);
    for (e = sock->Pending.Flink; e != &sock->Pending; e = e->Flink)
        IoCancelIrp(CONTAINING_RECORD(e, KSOCK_OP, Link)->Irp); /* listed: not freed yet */
    sock->IssuerStop = TRUE;
    KeReleaseSpinLock(&sock->Lock, irql);
    /* ...and the way Wine does: the issuer's exit cancels the I/O it started. */
    KeSetEvent(&sock->QueueReady, IO_NO_INCREMENT, FALSE);
    HilJoinThread(&sock->Issuer);

    /* Close only once nothing is pending (see the top of the file), but never hang. */
    left = KspDrain(sock, KSOCK_DRAIN_MS);
    if (left != 0)
        DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
                   "[ksock] closing a socket with %ld requests still pending after cancellation\n",
                   (long)left);
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
