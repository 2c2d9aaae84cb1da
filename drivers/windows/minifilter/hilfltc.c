/*
 * hilfltc.exe - user-mode client of hilflt's communication port (fltlib).
 *   hilfltc [TEXT]   sends one PING with TEXT, prints "hilfltc: reply <seq>: <text>".
 * Exit code 0 on a well-formed reply, else the failing HRESULT's low 16 bits or 1.
 */
#include <windows.h>
#include <fltuser.h>
#include <stdio.h>
#include <string.h>
#include "hilflt_msg.h"

int wmain(int argc, wchar_t **argv)
{
    HILFLT_REQUEST req;
    HILFLT_REPLY reply;
    HANDLE port = NULL;
    DWORD got = 0;
    HRESULT hr;
    int n;

    ZeroMemory(&req, sizeof(req));
    ZeroMemory(&reply, sizeof(reply));
    req.magic = HILFLT_MAGIC;
    req.op = HILFLT_OP_PING;
    n = WideCharToMultiByte(CP_UTF8, 0, argc > 1 ? argv[1] : L"ping", -1, (char *)req.text,
                            HILFLT_MAX_TEXT, NULL, NULL);
    req.len = n > 0 ? (unsigned int)(n - 1) : 0;

    hr = FilterConnectCommunicationPort(HILFLT_PORT_NAME, 0, NULL, 0, NULL, &port);
    if (FAILED(hr)) {
        printf("hilfltc: connect failed 0x%08lx\n", (unsigned long)hr);
        return (int)(hr & 0xffff) ? (int)(hr & 0xffff) : 1;
    }
    hr = FilterSendMessage(port, &req, sizeof(req), &reply, sizeof(reply), &got);
    CloseHandle(port);
    if (FAILED(hr)) {
        printf("hilfltc: send failed 0x%08lx\n", (unsigned long)hr);
        return (int)(hr & 0xffff) ? (int)(hr & 0xffff) : 1;
    }
    if (got != sizeof(reply) || reply.magic != HILFLT_MAGIC || reply.len > sizeof(reply.text)) {
        printf("hilfltc: malformed reply (%lu bytes)\n", (unsigned long)got);
        return 1;
    }
    printf("hilfltc: reply %u: %.*s\n", reply.sequence, (int)reply.len, (const char *)reply.text);
    return 0;
}
