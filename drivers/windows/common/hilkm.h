/* hilkm.h - small kernel-mode helpers shared by the kernel-hil Windows drivers. */
#ifndef HIL_HILKM_H
#define HIL_HILKM_H

#include <ntddk.h>

/* Every line a test waits for starts with the driver's tag, e.g. "[hilagent] connected". */
#define HIL_LOG(tag, fmt, ...) \
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, "[" tag "] " fmt "\n", ##__VA_ARGS__)

/* Reads a REG_DWORD from <RegistryPath>\Parameters; returns def when absent or malformed. */
ULONG HilReadParamDword(PCUNICODE_STRING registry_path, PCWSTR name, ULONG def);

/* Starts a system thread and returns a referenced thread object for HilJoinThread. */
NTSTATUS HilStartThread(PKSTART_ROUTINE routine, PVOID context, PETHREAD *thread);
/* Waits for the thread to exit and drops the reference. */
VOID HilJoinThread(PETHREAD *thread);

/* Waits on an event with a timeout in milliseconds; returns STATUS_TIMEOUT or STATUS_SUCCESS. */
NTSTATUS HilWaitMs(PVOID object, ULONG timeout_ms);

/* A sleeping lock (KMUTEX) for state that is held across a KsockShutdown call. */
typedef KMUTEX HIL_LOCK;
#define HilLockInit(l) KeInitializeMutex((l), 0)
#define HilLock(l) KeWaitForSingleObject((l), Executive, KernelMode, FALSE, NULL)
#define HilUnlock(l) KeReleaseMutex((l), FALSE)

#endif
