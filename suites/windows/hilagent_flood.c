/*
 * hilagent_flood.exe - test helper for the TEST BUILD of hilagent (suites/windows): feeds many
 * synthetic "created" notifications through IOCTL_HILAGENT_INJECT from one process, as fast as
 * the driver takes them (hilagentctl.exe starts one process per notification).
 *
 *   hilagent_flood FIRST_PID COUNT C:\path\image.exe
 *
 * Notification i has pid FIRST_PID + i and the image path \??\C:\path\image.exe.  Prints
 * "flood: N ok" and exits 0 when every IOCTL succeeded.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>
#include "hilagent_ioctl.h"

int wmain(int argc, wchar_t **argv)
{
    static wchar_t nt_path[HILAGENT_INJECT_MAX_PATH_CHARS + 1];
    HILAGENT_INJECT *req;
    unsigned long first, count, i;
    size_t chars, size;
    HANDLE dev;
    DWORD ret;

    if (argc != 4) {
        fwprintf(stderr, L"usage: hilagent_flood FIRST_PID COUNT IMAGE\n");
        return 2;
    }
    first = wcstoul(argv[1], NULL, 0);
    count = wcstoul(argv[2], NULL, 0);
    if (_snwprintf(nt_path, HILAGENT_INJECT_MAX_PATH_CHARS, L"\\??\\%ls", argv[3]) < 0)
        return 2;
    chars = wcslen(nt_path);
    size = sizeof(*req) + chars * sizeof(wchar_t);
    req = (HILAGENT_INJECT *)calloc(1, size);
    if (req == NULL)
        return 3;
    req->version = HILAGENT_INJECT_VERSION;
    req->created = 1;
    req->path_chars = (unsigned int)chars;
    memcpy(req + 1, nt_path, chars * sizeof(wchar_t));

    dev = CreateFileW(HILAGENT_USER_PATH, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0,
                      NULL);
    if (dev == INVALID_HANDLE_VALUE) {
        wprintf(L"flood: open: error %lu\n", (unsigned long)GetLastError());
        return 4;
    }
    for (i = 0; i < count; i++) {
        req->pid = (unsigned int)(first + i);
        if (!DeviceIoControl(dev, IOCTL_HILAGENT_INJECT, req, (DWORD)size, NULL, 0, &ret, NULL)) {
            wprintf(L"flood: inject %lu: error %lu\n", i, (unsigned long)GetLastError());
            return 5;
        }
    }
    CloseHandle(dev);
    free(req);
    wprintf(L"flood: %lu ok\n", count);
    return 0;
}
