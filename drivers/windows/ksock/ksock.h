/*
 * ksock - a small, blocking, socket-style API over Winsock Kernel (WSK), IPv4/TCP only.
 *
 * Contract (read this before using it):
 *  - Every call runs at PASSIVE_LEVEL in a system thread (never in DriverEntry's caller when a
 *    call can wait for the network, never in a notify callback).
 *  - Buffers may be paged: the library copies through its own non-paged bounce buffers, so
 *    the MDL it builds always describes non-paged memory and is freed before returning.
 *  - Each request gets its own IRP (allocated, completed into an event, freed here); an IRP
 *    or MDL never outlives the call that made it.
 *  - timeout_ms == KSOCK_WAIT_FOREVER waits forever.  When a wait times out, the IRP is
 *    cancelled; if the provider does not honour IoCancelIrp (Wine's netio does not), the
 *    socket is shut down, which completes every pending request.  A timed-out request returns
 *    STATUS_IO_TIMEOUT and the socket must be considered broken.
 *  - Each socket has a system thread (its issuer) that makes the provider calls for it, so
 *    that shutting down can cancel pending requests by ending that thread where IoCancelIrp
 *    does not work (Wine); a socket is closed only once its requests completed (see ksock.c).
 *  - KsockShutdown may be called from any thread at any time (for example from DriverUnload
 *    to unblock a thread waiting in KsockReceive).  KsockClose is for the owner only, once no
 *    other thread uses the socket.
 */
#ifndef HIL_KSOCK_H
#define HIL_KSOCK_H

#include <ntddk.h>
#include <wsk.h>

#define KSOCK_WAIT_FOREVER 0xffffffffUL
#define KSOCK_POOL_TAG 'kSlH'

typedef enum _KSOCK_KIND {
    KsockListenSocket = 1,
    KsockConnectionSocket = 2
} KSOCK_KIND;

typedef struct _KSOCK KSOCK, *PKSOCK;

/* Registers with WSK and captures the provider.  Call once (DriverEntry is fine). */
NTSTATUS KsockStartup(VOID);
/* Releases the provider and deregisters.  All sockets must be closed first. */
VOID KsockCleanup(VOID);

NTSTATUS KsockCreate(PKSOCK *sock, KSOCK_KIND kind);
/* ip and port in host byte order (0x7f000001 = 127.0.0.1). For a listen socket, a successful
 * bind also starts listening (that is how WSK works). */
NTSTATUS KsockBind(PKSOCK sock, ULONG ip, USHORT port);
/* WSK has no separate listen call: this checks the socket is a bound listen socket. */
NTSTATUS KsockListen(PKSOCK sock);
NTSTATUS KsockAccept(PKSOCK listener, PKSOCK *accepted, PSOCKADDR_IN remote, ULONG timeout_ms);
/* Binds to 0.0.0.0:0 first when the socket is not bound yet. */
NTSTATUS KsockConnect(PKSOCK sock, ULONG ip, USHORT port, ULONG timeout_ms);
/* Sends all of buf (loops over partial sends). */
NTSTATUS KsockSend(PKSOCK sock, const VOID *buf, SIZE_T len, ULONG timeout_ms);
/* Receives up to len bytes; *received == 0 with STATUS_SUCCESS means the peer closed. */
NTSTATUS KsockReceive(PKSOCK sock, PVOID buf, SIZE_T len, SIZE_T *received, ULONG timeout_ms);
/* Receives exactly len bytes; STATUS_CONNECTION_DISCONNECTED if the peer closes first.
 * The timeout applies to the whole call. */
NTSTATUS KsockReceiveAll(PKSOCK sock, PVOID buf, SIZE_T len, ULONG timeout_ms);
/* Cancels the pending requests (they complete with an error), waits for them (bounded) and
 * closes the WSK socket; any thread, idempotent. */
VOID KsockShutdown(PKSOCK sock);
/* Shutdown + free the wrapper.  Owner only. */
VOID KsockClose(PKSOCK sock);

/* How long a timed-out request may take to honour IoCancelIrp before the socket is shut down
 * to complete it (default 2000 ms).  For tests; set it before any request starts. */
VOID KsockSetCancelGraceMs(ULONG ms);

/* 127.0.0.1 style helper for host-order addresses. */
#define KSOCK_IPV4(a, b, c, d) \
    ((ULONG)(((ULONG)(a) << 24) | ((ULONG)(b) << 16) | ((ULONG)(c) << 8) | (ULONG)(d)))

#endif /* HIL_KSOCK_H */
