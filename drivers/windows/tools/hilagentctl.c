/*
 * hilagentctl.exe - drives the TEST BUILD of hilagent (hilagent_test.sys) only.
 *
 *   hilagentctl inject created PID C:\path\image.exe
 *   hilagentctl inject exited PID
 *
 * Each call feeds one synthetic process notification into the agent through
 * IOCTL_HILAGENT_INJECT, exactly as PsSetCreateProcessNotifyRoutineEx would.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>
#include "../agent/hilagent_ioctl.h"

int wmain(int argc, wchar_t **argv)
{
    HILAGENT_INJECT *req;
    size_t path_chars = 0, size;
    wchar_t nt_path[HILAGENT_INJECT_MAX_PATH_CHARS + 1];
    HANDLE dev;
    DWORD ret = 0;
    int created;
    unsigned long pid;
    wchar_t *end;

    if (argc < 4 || wcscmp(argv[1], L"inject") != 0) {
        fwprintf(stderr, L"usage: hilagentctl inject created|exited PID [IMAGE]\n");
        return 2;
    }
    created = wcscmp(argv[2], L"created") == 0;
    if (!created && wcscmp(argv[2], L"exited") != 0)
        return 2;
    pid = wcstoul(argv[3], &end, 0);
    if (*end != L'\0')
        return 2;
    if (created) {
        if (argc < 5)
            return 2;
        /* The kernel wants an NT path: C:\x -> \??\C:\x (as ImageFileName would be). */
        if (_snwprintf(nt_path, HILAGENT_INJECT_MAX_PATH_CHARS, L"\\??\\%ls", argv[4]) < 0)
            return 2;
        nt_path[HILAGENT_INJECT_MAX_PATH_CHARS] = L'\0';
        path_chars = wcslen(nt_path);
    }
    size = sizeof(*req) + path_chars * sizeof(wchar_t);
    req = (HILAGENT_INJECT *)calloc(1, size);
    if (req == NULL)
        return 3;
    req->version = HILAGENT_INJECT_VERSION;
    req->created = created ? 1 : 0;
    req->pid = (unsigned int)pid;
    req->path_chars = (unsigned int)path_chars;
    memcpy(req + 1, nt_path, path_chars * sizeof(wchar_t));

    dev = CreateFileW(HILAGENT_USER_PATH, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0,
                      NULL);
    if (dev == INVALID_HANDLE_VALUE) {
        wprintf(L"hilagentctl: open: error %lu\n", (unsigned long)GetLastError());
        free(req);
        return 4;
    }
    if (!DeviceIoControl(dev, IOCTL_HILAGENT_INJECT, req, (DWORD)size, NULL, 0, &ret, NULL)) {
        wprintf(L"hilagentctl: inject: error %lu\n", (unsigned long)GetLastError());
        CloseHandle(dev);
        free(req);
        return 5;
    }
    CloseHandle(dev);
    free(req);
    wprintf(L"hilagentctl: inject %ls %lu: ok\n", argv[2], pid);
    return 0;
}
