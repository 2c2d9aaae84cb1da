#include "hilkm.h"

#define HIL_KM_TAG 'mKlH'

NTSTATUS HilOpenParameters(PCUNICODE_STRING registry_path, HANDLE *key)
{
    static const WCHAR suffix[] = L"\\Parameters";
    UNICODE_STRING path;
    OBJECT_ATTRIBUTES oa;
    NTSTATUS status;

    *key = NULL;
    path.Length = 0;
    path.MaximumLength = (USHORT)(registry_path->Length + sizeof(suffix));
    path.Buffer = (PWCH)ExAllocatePoolWithTag(PagedPool, path.MaximumLength, HIL_KM_TAG);
    if (path.Buffer == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    RtlCopyUnicodeString(&path, registry_path);
    status = RtlAppendUnicodeToString(&path, suffix);
    if (NT_SUCCESS(status)) {
        InitializeObjectAttributes(&oa, &path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL,
                                   NULL);
        status = ZwOpenKey(key, KEY_READ, &oa);
    }
    ExFreePoolWithTag(path.Buffer, HIL_KM_TAG);
    return status;
}

ULONG HilReadParamDword(PCUNICODE_STRING registry_path, PCWSTR name, ULONG def)
{
    UNICODE_STRING value_name;
    HANDLE key = NULL;
    UCHAR buf[sizeof(KEY_VALUE_PARTIAL_INFORMATION) + sizeof(ULONG)];
    PKEY_VALUE_PARTIAL_INFORMATION info = (PKEY_VALUE_PARTIAL_INFORMATION)buf;
    ULONG result = def, len;
    NTSTATUS status;

    status = HilOpenParameters(registry_path, &key);
    if (NT_SUCCESS(status)) {
        RtlInitUnicodeString(&value_name, name);
        status = ZwQueryValueKey(key, &value_name, KeyValuePartialInformation, info, sizeof(buf),
                                 &len);
        if (NT_SUCCESS(status) && info->Type == REG_DWORD && info->DataLength == sizeof(ULONG))
            RtlCopyMemory(&result, info->Data, sizeof(ULONG));
        ZwClose(key);
    }
    return result;
}

NTSTATUS HilStartThread(PKSTART_ROUTINE routine, PVOID context, PETHREAD *thread)
{
    HANDLE h;
    NTSTATUS status;

    *thread = NULL;
    status = PsCreateSystemThread(&h, THREAD_ALL_ACCESS, NULL, NULL, NULL, routine, context);
    if (!NT_SUCCESS(status))
        return status;
    /* Object type NULL: the handle comes straight from PsCreateSystemThread, and mingw-w64's
     * dllimport declaration of PsThreadType dereferences the export once too often. */
    status = ObReferenceObjectByHandle(h, SYNCHRONIZE, NULL, KernelMode, (PVOID *)thread, NULL);
    ZwClose(h);
    /* If referencing failed the thread still runs; the caller must not unload under it.
     * ObReferenceObjectByHandle on a handle we just created only fails on exhaustion. */
    return status;
}

VOID HilJoinThread(PETHREAD *thread)
{
    if (*thread == NULL)
        return;
    KeWaitForSingleObject(*thread, Executive, KernelMode, FALSE, NULL);
    ObDereferenceObject(*thread);
    *thread = NULL;
}

NTSTATUS HilWaitMs(PVOID object, ULONG timeout_ms)
{
    LARGE_INTEGER t;
    t.QuadPart = -10000LL * (LONGLONG)timeout_ms;
    return KeWaitForSingleObject(object, Executive, KernelMode, FALSE, &t);
}
