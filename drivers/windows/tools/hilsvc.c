/*
 * hilsvc.exe - install, start, stop and delete a kernel-driver service.
 *
 *   hilsvc install NAME C:\path\driver.sys [Param=DWORD ...]   (values go to NAME\Parameters)
 *   hilsvc start NAME
 *   hilsvc stop NAME [timeout_ms]
 *   hilsvc delete NAME
 *   hilsvc query NAME
 *
 * Prints one line "hilsvc: <verb> <name>: ok" or "...: error <win32 code>" and exits with 0 or
 * the Win32 error code, so callers need no output parsing.
 */
#define UNICODE
#define _UNICODE
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

static int fail(const wchar_t *verb, const wchar_t *name, DWORD err)
{
    wprintf(L"hilsvc: %ls %ls: error %lu\n", verb, name, (unsigned long)err);
    fflush(stdout);
    return err ? (int)err : 1;
}

static int ok(const wchar_t *verb, const wchar_t *name)
{
    wprintf(L"hilsvc: %ls %ls: ok\n", verb, name);
    fflush(stdout);
    return 0;
}

static int set_params(const wchar_t *name, int argc, wchar_t **argv)
{
    wchar_t key_path[512];
    HKEY key;
    LONG rc;
    int i;

    if (argc == 0)
        return 0;
    if (_snwprintf(key_path, 512, L"SYSTEM\\CurrentControlSet\\Services\\%ls\\Parameters",
                   name) < 0)
        return ERROR_INVALID_PARAMETER;
    key_path[511] = L'\0';
    rc = RegCreateKeyExW(HKEY_LOCAL_MACHINE, key_path, 0, NULL, 0, KEY_SET_VALUE, NULL, &key,
                         NULL);
    if (rc != ERROR_SUCCESS)
        return rc;
    for (i = 0; i < argc; i++) {
        wchar_t *eq = wcschr(argv[i], L'='), *end;
        unsigned long v;
        DWORD dw;
        if (eq == NULL || eq == argv[i]) {
            RegCloseKey(key);
            return ERROR_INVALID_PARAMETER;
        }
        *eq = L'\0';
        v = wcstoul(eq + 1, &end, 0);
        if (*end != L'\0') {
            RegCloseKey(key);
            return ERROR_INVALID_PARAMETER;
        }
        dw = (DWORD)v;
        rc = RegSetValueExW(key, argv[i], 0, REG_DWORD, (const BYTE *)&dw, sizeof(dw));
        if (rc != ERROR_SUCCESS) {
            RegCloseKey(key);
            return rc;
        }
    }
    RegCloseKey(key);
    return 0;
}

static DWORD wait_state(SC_HANDLE svc, DWORD want, DWORD timeout_ms, DWORD *state)
{
    DWORD start = GetTickCount();
    SERVICE_STATUS st;

    for (;;) {
        if (!QueryServiceStatus(svc, &st))
            return GetLastError();
        *state = st.dwCurrentState;
        if (st.dwCurrentState == want)
            return 0;
        if (GetTickCount() - start > timeout_ms)
            return ERROR_SERVICE_REQUEST_TIMEOUT;
        Sleep(50); /* polling the SCM is the only way to observe a state change */
    }
}

int wmain(int argc, wchar_t **argv)
{
    SC_HANDLE scm, svc;
    const wchar_t *verb, *name;
    DWORD err = 0, state = 0;

    if (argc < 3) {
        fwprintf(stderr, L"usage: hilsvc install|start|stop|delete|query NAME [...]\n");
        return 2;
    }
    verb = argv[1];
    name = argv[2];
    scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_ALL_ACCESS);
    if (scm == NULL)
        return fail(verb, name, GetLastError());

    if (wcscmp(verb, L"install") == 0) {
        if (argc < 4) {
            CloseServiceHandle(scm);
            return fail(verb, name, ERROR_INVALID_PARAMETER);
        }
        svc = CreateServiceW(scm, name, name, SERVICE_ALL_ACCESS, SERVICE_KERNEL_DRIVER,
                             SERVICE_DEMAND_START, SERVICE_ERROR_NORMAL, argv[3], NULL, NULL,
                             NULL, NULL, NULL);
        if (svc == NULL) {
            err = GetLastError();
            CloseServiceHandle(scm);
            return fail(verb, name, err);
        }
        CloseServiceHandle(svc);
        err = set_params(name, argc - 4, argv + 4);
        CloseServiceHandle(scm);
        return err ? fail(verb, name, err) : ok(verb, name);
    }

    svc = OpenServiceW(scm, name, SERVICE_ALL_ACCESS);
    if (svc == NULL) {
        err = GetLastError();
        CloseServiceHandle(scm);
        return fail(verb, name, err);
    }
    if (wcscmp(verb, L"start") == 0) {
        if (!StartServiceW(svc, 0, NULL))
            err = GetLastError();
    } else if (wcscmp(verb, L"stop") == 0) {
        SERVICE_STATUS st;
        DWORD timeout = argc > 3 ? (DWORD)wcstoul(argv[3], NULL, 0) : 20000;
        if (!ControlService(svc, SERVICE_CONTROL_STOP, &st)) {
            err = GetLastError();
        } else {
            err = wait_state(svc, SERVICE_STOPPED, timeout, &state);
        }
    } else if (wcscmp(verb, L"delete") == 0) {
        if (!DeleteService(svc))
            err = GetLastError();
    } else if (wcscmp(verb, L"query") == 0) {
        SERVICE_STATUS st;
        if (!QueryServiceStatus(svc, &st))
            err = GetLastError();
        else
            wprintf(L"hilsvc: state %lu\n", (unsigned long)st.dwCurrentState);
    } else {
        err = ERROR_INVALID_PARAMETER;
    }
    CloseServiceHandle(svc);
    CloseServiceHandle(scm);
    return err ? fail(verb, name, err) : ok(verb, name);
}
