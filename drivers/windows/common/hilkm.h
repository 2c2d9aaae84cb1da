/* hilkm.h - small kernel-mode helpers shared by the kernel-hil Windows drivers. */
#ifndef HIL_HILKM_H
#define HIL_HILKM_H

#include <ntddk.h>

/* Every line a test waits for starts with the driver's tag, e.g. "[hilagent] connected". */
#define HIL_LOG(tag, fmt, ...) \
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, "[" tag "] " fmt "\n", ##__VA_ARGS__)

/* Opens <RegistryPath>\Parameters for reading (a kernel handle the caller ZwCloses). */
NTSTATUS HilOpenParameters(PCUNICODE_STRING registry_path, HANDLE *key);

/* Reads a REG_DWORD from <RegistryPath>\Parameters; returns def when absent or malformed. */
ULONG HilReadParamDword(PCUNICODE_STRING registry_path, PCWSTR name, ULONG def);

/* Starts a system thread and returns a referenced thread object for HilJoinThread. */
NTSTATUS HilStartThread(PKSTART_ROUTINE routine, PVOID context, PETHREAD *thread);
/* Waits for the thread to exit and drops the reference. */
VOID HilJoinThread(PETHREAD *thread);

/* Waits on an event with a timeout in milliseconds; returns STATUS_TIMEOUT or STATUS_SUCCESS. */
NTSTATUS HilWaitMs(PVOID object, ULONG timeout_ms);

/* A sleeping, non-recursive lock held across KsockShutdown calls: a synchronization event
 * that starts signalled (one waiter gets it, KeSetEvent hands it back).  Chosen over KMUTEX
 * because with a KMUTEX, Wine 8.0 left a thread waiting for it blocked after another thread
 * released it (seen with hilagent unload). */
typedef KEVENT HIL_LOCK;
#define HilLockInit(l) KeInitializeEvent((l), SynchronizationEvent, TRUE)
#define HilLock(l) KeWaitForSingleObject((l), Executive, KernelMode, FALSE, NULL)
#define HilUnlock(l) KeSetEvent((l), IO_NO_INCREMENT, FALSE)

#endif
