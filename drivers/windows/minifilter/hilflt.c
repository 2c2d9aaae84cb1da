/*
 * hilflt.sys - minimal minifilter exposing a communication port \HilFltPort.
 *
 *  - The port's security descriptor comes from FltBuildDefaultSecurityDescriptor: its DACL
 *    grants access to SYSTEM and Administrators only.  It is freed right after the port is
 *    created (the port keeps its own copy).
 *  - One client at a time (MaxConnections = 1); the client port handle is kept so unload can
 *    close it; disconnect closes it with FltCloseClientPort as required.
 *  - Every message gets a reply (HILFLT_REPLY): sizes are checked before anything is read,
 *    the request is copied out of the caller's buffer once and only the copy is used.
 *  - It attaches to no volume (InstanceSetup says STATUS_FLT_DO_NOT_ATTACH): the port is the
 *    point.  Unload closes the port, then unregisters the filter.
 *
 * The message buffers are the client's user-mode buffers.  With MSVC (WDK build) the copy is
 * guarded by __try/__except + ProbeForRead/Write; GCC has no SEH keywords, so the mingw build
 * relies on the port DACL (only admins, who can load drivers anyway, can send) - see WDK.md.
 */
#include <fltKernel.h>
#include "hilflt_msg.h"

#define LOG(fmt, ...) \
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, "[hilflt] " fmt "\n", ##__VA_ARGS__)

static PFLT_FILTER g_filter;
static PFLT_PORT g_server_port;
static PFLT_PORT g_client_port;
static volatile LONG g_sequence;

#if defined(_MSC_VER)
#define HIL_TRY __try
#define HIL_EXCEPT __except (EXCEPTION_EXECUTE_HANDLER)
#else
#define HIL_TRY if (1)
#define HIL_EXCEPT else
#endif

static NTSTATUS NTAPI PortConnect(PFLT_PORT client_port, PVOID server_cookie, PVOID context,
                                  ULONG context_size, PVOID *connection_cookie)
{
    UNREFERENCED_PARAMETER(server_cookie);
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(context_size);
    g_client_port = client_port;
    *connection_cookie = NULL;
    InterlockedExchange(&g_sequence, 0);
    LOG("client connected (pid %lu)", (unsigned long)(ULONG_PTR)PsGetCurrentProcessId());
    return STATUS_SUCCESS;
}

static VOID NTAPI PortDisconnect(PVOID connection_cookie)
{
    UNREFERENCED_PARAMETER(connection_cookie);
    FltCloseClientPort(g_filter, &g_client_port); /* sets g_client_port to NULL */
    LOG("client disconnected");
}

static NTSTATUS NTAPI PortMessage(PVOID port_cookie, PVOID input, ULONG input_len, PVOID output,
                                  ULONG output_len, PULONG returned)
{
    HILFLT_REQUEST req;
    HILFLT_REPLY reply;
    static const char prefix[] = "pong: ";
    ULONG i;
    NTSTATUS status = STATUS_SUCCESS;

    UNREFERENCED_PARAMETER(port_cookie);
    *returned = 0;
    if (input == NULL || input_len != sizeof(req) || output == NULL ||
        output_len < sizeof(reply))
        return STATUS_INVALID_PARAMETER;

    HIL_TRY {
#if defined(_MSC_VER)
        ProbeForRead(input, input_len, sizeof(ULONG));
#endif
        RtlCopyMemory(&req, input, sizeof(req)); /* one copy: no double fetch */
    }
    HIL_EXCEPT {
        return STATUS_INVALID_USER_BUFFER;
    }
    if (req.magic != HILFLT_MAGIC || req.op != HILFLT_OP_PING || req.len > HILFLT_MAX_TEXT)
        return STATUS_INVALID_PARAMETER;

    RtlZeroMemory(&reply, sizeof(reply));
    reply.magic = HILFLT_MAGIC;
    reply.status = 0;
    reply.sequence = (unsigned int)InterlockedIncrement(&g_sequence);
    for (i = 0; i < sizeof(prefix) - 1; i++)
        reply.text[i] = (unsigned char)prefix[i];
    RtlCopyMemory(reply.text + i, req.text, req.len);
    reply.len = i + req.len;

    HIL_TRY {
#if defined(_MSC_VER)
        ProbeForWrite(output, output_len, sizeof(ULONG));
#endif
        RtlCopyMemory(output, &reply, sizeof(reply));
        *returned = sizeof(reply);
    }
    HIL_EXCEPT {
        status = STATUS_INVALID_USER_BUFFER;
    }
    LOG("message %u answered", reply.sequence);
    return status;
}

static VOID ClosePorts(VOID)
{
    if (g_server_port) {
        FltCloseCommunicationPort(g_server_port); /* no new connections */
        g_server_port = NULL;
    }
    /* An existing connection is torn down by FltUnregisterFilter, which calls PortDisconnect. */
}

static NTSTATUS NTAPI FilterUnload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    ClosePorts();
    FltUnregisterFilter(g_filter);
    g_filter = NULL;
    LOG("unloaded");
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI InstanceSetup(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_SETUP_FLAGS flags,
                                    ULONG device_type, ULONG fs_type)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    UNREFERENCED_PARAMETER(device_type);
    UNREFERENCED_PARAMETER(fs_type);
    return STATUS_FLT_DO_NOT_ATTACH;
}

static NTSTATUS NTAPI InstanceQueryTeardown(PCFLT_RELATED_OBJECTS objects,
                                            FLT_INSTANCE_QUERY_TEARDOWN_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION g_operations[] = {{IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL}};

static const FLT_REGISTRATION g_registration = {
    sizeof(FLT_REGISTRATION),
    FLT_REGISTRATION_VERSION,
    0,
    NULL,
    g_operations,
    FilterUnload,
    InstanceSetup,
    InstanceQueryTeardown,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL};

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    PSECURITY_DESCRIPTOR sd = NULL;
    OBJECT_ATTRIBUTES oa;
    UNICODE_STRING name;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(registry_path);
    status = FltRegisterFilter(driver, &g_registration, &g_filter);
    if (!NT_SUCCESS(status)) {
        LOG("FltRegisterFilter failed 0x%08lx", (unsigned long)status);
        return status;
    }
    /* SYSTEM + Administrators only. */
    status = FltBuildDefaultSecurityDescriptor(&sd, FLT_PORT_ALL_ACCESS);
    if (NT_SUCCESS(status)) {
        RtlInitUnicodeString(&name, HILFLT_PORT_NAME);
        InitializeObjectAttributes(&oa, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, sd);
        status = FltCreateCommunicationPort(g_filter, &g_server_port, &oa, NULL, PortConnect,
                                            PortDisconnect, PortMessage, 1);
        FltFreeSecurityDescriptor(sd);
    }
    if (NT_SUCCESS(status))
        status = FltStartFiltering(g_filter);
    if (!NT_SUCCESS(status)) {
        LOG("start failed 0x%08lx", (unsigned long)status);
        ClosePorts();
        FltUnregisterFilter(g_filter);
        g_filter = NULL;
        return status;
    }
    LOG("port %ls ready", HILFLT_PORT_NAME);
    return STATUS_SUCCESS;
}
