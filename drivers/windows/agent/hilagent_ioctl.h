/* hilagent_ioctl.h - the TEST-BUILD-ONLY control interface of hilagent (HIL_TEST_BUILD).
 * Shared by the driver and hilagentctl.exe.  Release builds have no device at all. */
#ifndef HIL_AGENT_IOCTL_H
#define HIL_AGENT_IOCTL_H

#define HILAGENT_DEVICE_NAME L"\\Device\\HilAgentTest"
#define HILAGENT_DOS_NAME L"\\DosDevices\\HilAgentTest"
#define HILAGENT_USER_PATH L"\\\\.\\HilAgentTest"

/* CTL_CODE(FILE_DEVICE_UNKNOWN, 0x801, METHOD_BUFFERED, FILE_WRITE_ACCESS) */
#define IOCTL_HILAGENT_INJECT ((0x00000022u << 16) | (0x0002u << 14) | (0x801u << 2) | 0u)

#define HILAGENT_INJECT_VERSION 1u
#define HILAGENT_INJECT_MAX_PATH_CHARS 2048u

/* Input: this header followed by path_chars UTF-16 code units (no terminator needed). */
typedef struct _HILAGENT_INJECT {
    unsigned int version;    /* HILAGENT_INJECT_VERSION */
    unsigned int created;    /* 1 = process created, 0 = exited */
    unsigned int pid;
    unsigned int path_chars; /* <= HILAGENT_INJECT_MAX_PATH_CHARS; 0 for exits */
    /* unsigned short path[path_chars]; */
} HILAGENT_INJECT;

#endif
