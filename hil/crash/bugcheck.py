"""Windows bug checks: names of the common stop codes and libvirt's Hyper-V panic line.

When a Windows guest with Hyper-V enlightenments (``<hyperv><crash state='on'/>``) bug-checks,
it writes the stop code and its four parameters to the Hyper-V crash MSRs; QEMU raises
``GUEST_PANICKED`` and libvirt writes one line to the domain log
(``/var/log/libvirt/qemu/<domain>.log``)::

    2024-09-30 16:30:49.506+0000: panic hyper-v: arg1='0x3b', arg2='0xc0000005', arg3='0xfffff80312345678', arg4='0xffffa0012345c000', arg5='0x0'

``arg1`` is the bug-check code, ``arg2``..``arg5`` its parameters.  :func:`parse_panic_line`
turns that line into a :class:`~hil.crash.report.Report` titled
``0x0000003B SYSTEM_SERVICE_EXCEPTION`` (kind :attr:`~hil.crash.kinds.CrashKind.BSOD`).  Names
follow Microsoft's *Bug check code reference*.

Windows also names a bug check on its serial port when Emergency Management Services are on
(``bcdedit /ems on``): an XML block with ``<PROPERTY NAME="STOPCODE" ...><VALUE>"0xD1"</VALUE>``,
and on older versions a ``*** STOP: 0x000000D1 (0x..,0x..,0x..,0x..)`` line.
:class:`ConsoleWatcher` finds those in a console stream (the crash monitor's Windows detector
feeds it the guest's serial log), :func:`parse_console_line` in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hil.crash.kinds import CrashKind
from hil.crash.report import Report
from hil.crash.stream import LineWatcher

KIND = CrashKind.BSOD

BUGCHECKS: dict[int, str] = {
    0x01: "APC_INDEX_MISMATCH",
    0x02: "DEVICE_QUEUE_NOT_BUSY",
    0x03: "INVALID_AFFINITY_SET",
    0x04: "INVALID_DATA_ACCESS_TRAP",
    0x05: "INVALID_PROCESS_ATTACH_ATTEMPT",
    0x06: "INVALID_PROCESS_DETACH_ATTEMPT",
    0x07: "INVALID_SOFTWARE_INTERRUPT",
    0x08: "IRQL_NOT_DISPATCH_LEVEL",
    0x09: "IRQL_NOT_GREATER_OR_EQUAL",
    0x0A: "IRQL_NOT_LESS_OR_EQUAL",
    0x0B: "NO_EXCEPTION_HANDLING_SUPPORT",
    0x0C: "MAXIMUM_WAIT_OBJECTS_EXCEEDED",
    0x0D: "MUTEX_LEVEL_NUMBER_VIOLATION",
    0x0E: "NO_USER_MODE_CONTEXT",
    0x0F: "SPIN_LOCK_ALREADY_OWNED",
    0x10: "SPIN_LOCK_NOT_OWNED",
    0x11: "THREAD_NOT_MUTEX_OWNER",
    0x12: "TRAP_CAUSE_UNKNOWN",
    0x13: "EMPTY_THREAD_REAPER_LIST",
    0x14: "CREATE_DELETE_LOCK_NOT_LOCKED",
    0x15: "LAST_CHANCE_CALLED_FROM_KMODE",
    0x16: "CID_HANDLE_CREATION",
    0x17: "CID_HANDLE_DELETION",
    0x18: "REFERENCE_BY_POINTER",
    0x19: "BAD_POOL_HEADER",
    0x1A: "MEMORY_MANAGEMENT",
    0x1B: "PFN_SHARE_COUNT",
    0x1C: "PFN_REFERENCE_COUNT",
    0x1D: "NO_SPIN_LOCK_AVAILABLE",
    0x1E: "KMODE_EXCEPTION_NOT_HANDLED",
    0x1F: "SHARED_RESOURCE_CONV_ERROR",
    0x20: "KERNEL_APC_PENDING_DURING_EXIT",
    0x21: "QUOTA_UNDERFLOW",
    0x22: "FILE_SYSTEM",
    0x23: "FAT_FILE_SYSTEM",
    0x24: "NTFS_FILE_SYSTEM",
    0x25: "NPFS_FILE_SYSTEM",
    0x26: "CDFS_FILE_SYSTEM",
    0x27: "RDR_FILE_SYSTEM",
    0x28: "CORRUPT_ACCESS_TOKEN",
    0x29: "SECURITY_SYSTEM",
    0x2A: "INCONSISTENT_IRP",
    0x2B: "PANIC_STACK_SWITCH",
    0x2C: "PORT_DRIVER_INTERNAL",
    0x2D: "SCSI_DISK_DRIVER_INTERNAL",
    0x2E: "DATA_BUS_ERROR",
    0x2F: "INSTRUCTION_BUS_ERROR",
    0x30: "SET_OF_INVALID_CONTEXT",
    0x31: "PHASE0_INITIALIZATION_FAILED",
    0x32: "PHASE1_INITIALIZATION_FAILED",
    0x33: "UNEXPECTED_INITIALIZATION_CALL",
    0x34: "CACHE_MANAGER",
    0x35: "NO_MORE_IRP_STACK_LOCATIONS",
    0x36: "DEVICE_REFERENCE_COUNT_NOT_ZERO",
    0x37: "FLOPPY_INTERNAL_ERROR",
    0x38: "SERIAL_DRIVER_INTERNAL",
    0x39: "SYSTEM_EXIT_OWNED_MUTEX",
    0x3A: "SYSTEM_UNWIND_PREVIOUS_USER",
    0x3B: "SYSTEM_SERVICE_EXCEPTION",
    0x3C: "INTERRUPT_UNWIND_ATTEMPTED",
    0x3D: "INTERRUPT_EXCEPTION_NOT_HANDLED",
    0x3E: "MULTIPROCESSOR_CONFIGURATION_NOT_SUPPORTED",
    0x3F: "NO_MORE_SYSTEM_PTES",
    0x40: "TARGET_MDL_TOO_SMALL",
    0x41: "MUST_SUCCEED_POOL_EMPTY",
    0x42: "ATDISK_DRIVER_INTERNAL",
    0x43: "NO_SUCH_PARTITION",
    0x44: "MULTIPLE_IRP_COMPLETE_REQUESTS",
    0x45: "INSUFFICIENT_SYSTEM_MAP_REGS",
    0x46: "DEREF_UNKNOWN_LOGON_SESSION",
    0x47: "REF_UNKNOWN_LOGON_SESSION",
    0x48: "CANCEL_STATE_IN_COMPLETED_IRP",
    0x49: "PAGE_FAULT_WITH_INTERRUPTS_OFF",
    0x4A: "IRQL_GT_ZERO_AT_SYSTEM_SERVICE",
    0x4B: "STREAMS_INTERNAL_ERROR",
    0x4C: "FATAL_UNHANDLED_HARD_ERROR",
    0x4D: "NO_PAGES_AVAILABLE",
    0x4E: "PFN_LIST_CORRUPT",
    0x4F: "NDIS_INTERNAL_ERROR",
    0x50: "PAGE_FAULT_IN_NONPAGED_AREA",
    0x51: "REGISTRY_ERROR",
    0x52: "MAILSLOT_FILE_SYSTEM",
    0x53: "NO_BOOT_DEVICE",
    0x54: "LM_SERVER_INTERNAL_ERROR",
    0x55: "DATA_COHERENCY_EXCEPTION",
    0x56: "INSTRUCTION_COHERENCY_EXCEPTION",
    0x57: "XNS_INTERNAL_ERROR",
    0x58: "FTDISK_INTERNAL_ERROR",
    0x59: "PINBALL_FILE_SYSTEM",
    0x5A: "CRITICAL_SERVICE_FAILED",
    0x5B: "SET_ENV_VAR_FAILED",
    0x5C: "HAL_INITIALIZATION_FAILED",
    0x5D: "UNSUPPORTED_PROCESSOR",
    0x5E: "OBJECT_INITIALIZATION_FAILED",
    0x5F: "SECURITY_INITIALIZATION_FAILED",
    0x60: "PROCESS_INITIALIZATION_FAILED",
    0x61: "HAL1_INITIALIZATION_FAILED",
    0x62: "OBJECT1_INITIALIZATION_FAILED",
    0x63: "SECURITY1_INITIALIZATION_FAILED",
    0x64: "SYMBOLIC_INITIALIZATION_FAILED",
    0x65: "MEMORY1_INITIALIZATION_FAILED",
    0x66: "CACHE_INITIALIZATION_FAILED",
    0x67: "CONFIG_INITIALIZATION_FAILED",
    0x68: "FILE_INITIALIZATION_FAILED",
    0x69: "IO1_INITIALIZATION_FAILED",
    0x6A: "LPC_INITIALIZATION_FAILED",
    0x6B: "PROCESS1_INITIALIZATION_FAILED",
    0x6C: "REFMON_INITIALIZATION_FAILED",
    0x6D: "SESSION1_INITIALIZATION_FAILED",
    0x72: "ASSIGN_DRIVE_LETTERS_FAILED",
    0x73: "CONFIG_LIST_FAILED",
    0x74: "BAD_SYSTEM_CONFIG_INFO",
    0x75: "CANNOT_WRITE_CONFIGURATION",
    0x76: "PROCESS_HAS_LOCKED_PAGES",
    0x77: "KERNEL_STACK_INPAGE_ERROR",
    0x78: "PHASE0_EXCEPTION",
    0x79: "MISMATCHED_HAL",
    0x7A: "KERNEL_DATA_INPAGE_ERROR",
    0x7B: "INACCESSIBLE_BOOT_DEVICE",
    0x7C: "BUGCODE_NDIS_DRIVER",
    0x7D: "INSTALL_MORE_MEMORY",
    0x7E: "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
    0x7F: "UNEXPECTED_KERNEL_MODE_TRAP",
    0x80: "NMI_HARDWARE_FAILURE",
    0x81: "SPIN_LOCK_INIT_FAILURE",
    0x82: "DFS_FILE_SYSTEM",
    0x85: "SETUP_FAILURE",
    0x8B: "MBR_CHECKSUM_MISMATCH",
    0x8E: "KERNEL_MODE_EXCEPTION_NOT_HANDLED",
    0x8F: "PP0_INITIALIZATION_FAILED",
    0x90: "PP1_INITIALIZATION_FAILED",
    0x92: "UP_DRIVER_ON_MP_SYSTEM",
    0x93: "INVALID_KERNEL_HANDLE",
    0x94: "KERNEL_STACK_LOCKED_AT_EXIT",
    0x96: "INVALID_WORK_QUEUE_ITEM",
    0x97: "BOUND_IMAGE_UNSUPPORTED",
    0x98: "END_OF_NT_EVALUATION_PERIOD",
    0x99: "INVALID_REGION_OR_SEGMENT",
    0x9A: "SYSTEM_LICENSE_VIOLATION",
    0x9B: "UDFS_FILE_SYSTEM",
    0x9C: "MACHINE_CHECK_EXCEPTION",
    0x9E: "USER_MODE_HEALTH_MONITOR",
    0x9F: "DRIVER_POWER_STATE_FAILURE",
    0xA0: "INTERNAL_POWER_ERROR",
    0xA1: "PCI_BUS_DRIVER_INTERNAL",
    0xA2: "MEMORY_IMAGE_CORRUPT",
    0xA3: "ACPI_DRIVER_INTERNAL",
    0xA4: "CNSS_FILE_SYSTEM_FILTER",
    0xA5: "ACPI_BIOS_ERROR",
    0xA7: "BAD_EXHANDLE",
    0xAC: "HAL_MEMORY_ALLOCATION",
    0xAD: "VIDEO_DRIVER_DEBUG_REPORT_REQUEST",
    0xB1: "BGI_DETECTED_VIOLATION",
    0xB4: "VIDEO_DRIVER_INIT_FAILURE",
    0xB8: "ATTEMPTED_SWITCH_FROM_DPC",
    0xB9: "CHIPSET_DETECTED_ERROR",
    0xBA: "SESSION_HAS_VALID_VIEWS_ON_EXIT",
    0xBB: "NETWORK_BOOT_INITIALIZATION_FAILED",
    0xBC: "NETWORK_BOOT_DUPLICATE_ADDRESS",
    0xBD: "INVALID_HIBERNATED_STATE",
    0xBE: "ATTEMPTED_WRITE_TO_READONLY_MEMORY",
    0xBF: "MUTEX_ALREADY_OWNED",
    0xC1: "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
    0xC2: "BAD_POOL_CALLER",
    0xC4: "DRIVER_VERIFIER_DETECTED_VIOLATION",
    0xC5: "DRIVER_CORRUPTED_EXPOOL",
    0xC6: "DRIVER_CAUGHT_MODIFYING_FREED_POOL",
    0xC7: "TIMER_OR_DPC_INVALID",
    0xC8: "IRQL_UNEXPECTED_VALUE",
    0xC9: "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
    0xCA: "PNP_DETECTED_FATAL_ERROR",
    0xCB: "DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS",
    0xCC: "PAGE_FAULT_IN_FREED_SPECIAL_POOL",
    0xCD: "PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
    0xCE: "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
    0xCF: "TERMINAL_SERVER_DRIVER_MADE_INCORRECT_MEMORY_REFERENCE",
    0xD0: "DRIVER_CORRUPTED_MMPOOL",
    0xD1: "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
    0xD2: "BUGCODE_ID_DRIVER",
    0xD3: "DRIVER_PORTION_MUST_BE_NONPAGED",
    0xD4: "SYSTEM_SCAN_AT_RAISED_IRQL_CAUGHT_IMPROPER_DRIVER_UNLOAD",
    0xD5: "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL",
    0xD6: "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
    0xD7: "DRIVER_UNMAPPING_INVALID_VIEW",
    0xD8: "DRIVER_USED_EXCESSIVE_PTES",
    0xD9: "LOCKED_PAGES_TRACKER_CORRUPTION",
    0xDA: "SYSTEM_PTE_MISUSE",
    0xDB: "DRIVER_CORRUPTED_SYSPTES",
    0xDC: "DRIVER_INVALID_STACK_ACCESS",
    0xDE: "POOL_CORRUPTION_IN_FILE_AREA",
    0xDF: "IMPERSONATING_WORKER_THREAD",
    0xE0: "ACPI_BIOS_FATAL_ERROR",
    0xE1: "WORKER_THREAD_RETURNED_AT_BAD_IRQL",
    0xE2: "MANUALLY_INITIATED_CRASH",
    0xE3: "RESOURCE_NOT_OWNED",
    0xE4: "WORKER_INVALID",
    0xE6: "DRIVER_VERIFIER_DMA_VIOLATION",
    0xE7: "INVALID_FLOATING_POINT_STATE",
    0xE8: "INVALID_CANCEL_OF_FILE_OPEN",
    0xE9: "ACTIVE_EX_WORKER_THREAD_TERMINATION",
    0xEA: "THREAD_STUCK_IN_DEVICE_DRIVER",
    0xEB: "DIRTY_MAPPED_PAGES_CONGESTION",
    0xEC: "SESSION_HAS_VALID_SPECIAL_POOL_ON_EXIT",
    0xED: "UNMOUNTABLE_BOOT_VOLUME",
    0xEF: "CRITICAL_PROCESS_DIED",
    0xF0: "STORAGE_MINIPORT_ERROR",
    0xF1: "SCSI_VERIFIER_DETECTED_VIOLATION",
    0xF2: "HARDWARE_INTERRUPT_STORM",
    0xF3: "DISORDERLY_SHUTDOWN",
    0xF4: "CRITICAL_OBJECT_TERMINATION",
    0xF5: "FLTMGR_FILE_SYSTEM",
    0xF6: "PCI_VERIFIER_DETECTED_VIOLATION",
    0xF7: "DRIVER_OVERRAN_STACK_BUFFER",
    0xF8: "RAMDISK_BOOT_INITIALIZATION_FAILED",
    0xF9: "DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN",
    0xFA: "HTTP_DRIVER_CORRUPTED",
    0xFC: "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY",
    0xFD: "DIRTY_NOWRITE_PAGES_CONGESTION",
    0xFE: "BUGCODE_USB_DRIVER",
    0xFF: "RESERVE_QUEUE_OVERFLOW",
    0x100: "LOADER_BLOCK_MISMATCH",
    0x101: "CLOCK_WATCHDOG_TIMEOUT",
    0x102: "DPC_WATCHDOG_TIMEOUT",
    0x103: "MUP_FILE_SYSTEM",
    0x104: "AGP_INVALID_ACCESS",
    0x105: "AGP_GART_CORRUPTION",
    0x106: "AGP_ILLEGALLY_REPROGRAMMED",
    0x108: "THIRD_PARTY_FILE_SYSTEM_FAILURE",
    0x109: "CRITICAL_STRUCTURE_CORRUPTION",
    0x10A: "APP_TAGGING_INITIALIZATION_FAILED",
    0x10C: "FSRTL_EXTRA_CREATE_PARAMETER_VIOLATION",
    0x10D: "WDF_VIOLATION",
    0x10E: "VIDEO_MEMORY_MANAGEMENT_INTERNAL",
    0x10F: "RESOURCE_MANAGER_EXCEPTION_NOT_HANDLED",
    0x111: "RECURSIVE_NMI",
    0x112: "MSRPC_STATE_VIOLATION",
    0x113: "VIDEO_DXGKRNL_FATAL_ERROR",
    0x114: "VIDEO_SHADOW_DRIVER_FATAL_ERROR",
    0x115: "AGP_INTERNAL",
    0x116: "VIDEO_TDR_FAILURE",
    0x117: "VIDEO_TDR_TIMEOUT_DETECTED",
    0x119: "VIDEO_SCHEDULER_INTERNAL_ERROR",
    0x11A: "EM_INITIALIZATION_FAILURE",
    0x11B: "DRIVER_RETURNED_HOLDING_CANCEL_LOCK",
    0x11C: "ATTEMPTED_WRITE_TO_CM_PROTECTED_STORAGE",
    0x11D: "EVENT_TRACING_FATAL_ERROR",
    0x11E: "TOO_MANY_RECURSIVE_FAULTS",
    0x11F: "INVALID_DRIVER_HANDLE",
    0x120: "BITLOCKER_FATAL_ERROR",
    0x121: "DRIVER_VIOLATION",
    0x122: "WHEA_INTERNAL_ERROR",
    0x123: "CRYPTO_SELF_TEST_FAILURE",
    0x124: "WHEA_UNCORRECTABLE_ERROR",
    0x125: "NMR_INVALID_STATE",
    0x126: "NETIO_INVALID_POOL_CALLER",
    0x127: "PAGE_NOT_ZERO",
    0x128: "WORKER_THREAD_RETURNED_WITH_BAD_IO_PRIORITY",
    0x129: "WORKER_THREAD_RETURNED_WITH_BAD_PAGING_IO_PRIORITY",
    0x12A: "MUI_NO_VALID_SYSTEM_LANGUAGE",
    0x12B: "FAULTY_HARDWARE_CORRUPTED_PAGE",
    0x12C: "EXFAT_FILE_SYSTEM",
    0x12D: "VOLSNAP_OVERLAP_TABLE_FULL",
    0x12E: "INVALID_MDL_RANGE",
    0x12F: "VHD_BOOT_INITIALIZATION_FAILED",
    0x130: "DYNAMIC_ADD_PROCESSOR_MISMATCH",
    0x131: "INVALID_EXTENDED_PROCESSOR_STATE",
    0x132: "RESOURCE_OWNER_POINTER_INVALID",
    0x133: "DPC_WATCHDOG_VIOLATION",
    0x134: "DRIVE_EXTENDER",
    0x135: "REGISTRY_FILTER_DRIVER_EXCEPTION",
    0x136: "VHD_BOOT_HOST_VOLUME_NOT_ENOUGH_SPACE",
    0x137: "WIN32K_HANDLE_MANAGER",
    0x138: "GPIO_CONTROLLER_DRIVER_ERROR",
    0x139: "KERNEL_SECURITY_CHECK_FAILURE",
    0x13A: "KERNEL_MODE_HEAP_CORRUPTION",
    0x13B: "PASSIVE_INTERRUPT_ERROR",
    0x13C: "INVALID_IO_BOOST_STATE",
    0x13D: "CRITICAL_INITIALIZATION_FAILURE",
    0x140: "STORAGE_DEVICE_ABNORMALITY_DETECTED",
    0x143: "PROCESSOR_DRIVER_INTERNAL",
    0x144: "BUGCODE_USB3_DRIVER",
    0x145: "SECURE_BOOT_VIOLATION",
    0x147: "ABNORMAL_RESET_DETECTED",
    0x149: "REFS_FILE_SYSTEM",
    0x14A: "KERNEL_WMI_INTERNAL",
    0x14B: "SOC_SUBSYSTEM_FAILURE",
    0x14C: "FATAL_ABNORMAL_RESET_ERROR",
    0x14D: "EXCEPTION_SCOPE_INVALID",
    0x14E: "SOC_CRITICAL_DEVICE_REMOVED",
    0x14F: "PDC_WATCHDOG_TIMEOUT",
    0x150: "TCPIP_AOAC_NIC_ACTIVE_REFERENCE_LEAK",
    0x151: "UNSUPPORTED_INSTRUCTION_MODE",
    0x152: "INVALID_PUSH_LOCK_FLAGS",
    0x153: "KERNEL_LOCK_ENTRY_LEAKED_ON_THREAD_TERMINATION",
    0x154: "UNEXPECTED_STORE_EXCEPTION",
    0x155: "OS_DATA_TAMPERING",
    0x157: "KERNEL_THREAD_PRIORITY_FLOOR_VIOLATION",
    0x158: "ILLEGAL_IOMMU_PAGE_FAULT",
    0x159: "HAL_ILLEGAL_IOMMU_PAGE_FAULT",
    0x15A: "SDBUS_INTERNAL_ERROR",
    0x15B: "WORKER_THREAD_RETURNED_WITH_SYSTEM_PAGE_PRIORITY_ACTIVE",
    0x160: "WIN32K_ATOMIC_CHECK_FAILURE",
    0x162: "KERNEL_AUTO_BOOST_INVALID_LOCK_RELEASE",
    0x163: "WORKER_THREAD_TEST_CONDITION",
    0x164: "WIN32K_CRITICAL_FAILURE",
    0x16C: "INVALID_RUNDOWN_PROTECTION_FLAGS",
    0x16D: "INVALID_SLOT_ALLOCATOR_FLAGS",
    0x16E: "ERESOURCE_INVALID_RELEASE",
    0x175: "PREVIOUS_FATAL_ABNORMAL_RESET_ERROR",
    0x178: "ELAM_DRIVER_DETECTED_FATAL_ERROR",
    0x17E: "MICROCODE_REVISION_MISMATCH",
    0x189: "BAD_OBJECT_HEADER",
    0x18B: "SECURE_KERNEL_ERROR",
    0x18C: "HYPERGUARD_VIOLATION",
    0x18D: "SECURE_FAULT_UNHANDLED",
    0x18E: "KERNEL_PARTITION_REFERENCE_VIOLATION",
    0x191: "PF_DETECTED_CORRUPTION",
    0x192: "KERNEL_AUTO_BOOST_LOCK_ACQUISITION_WITH_RAISED_IRQL",
    0x196: "LOADER_ROLLBACK_DETECTED",
    0x197: "WIN32K_SECURITY_FAILURE",
    0x199: "KERNEL_STORAGE_SLOT_IN_USE",
    0x19A: "WORKER_THREAD_RETURNED_WHILE_ATTACHED_TO_SILO",
    0x19B: "TTM_FATAL_ERROR",
    0x19C: "WIN32K_POWER_WATCHDOG_TIMEOUT",
    0x1C4: "DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP",
    0x1C7: "STORE_DATA_STRUCTURE_CORRUPTION",
    0x1C8: "MANUALLY_INITIATED_POWER_BUTTON_HOLD",
    0x1CA: "SYNTHETIC_WATCHDOG_TIMEOUT",
    0x1D5: "DRIVER_PNP_WATCHDOG",
    0x20001: "HYPERVISOR_ERROR",
    0x1000007E: "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M",
    0x1000007F: "UNEXPECTED_KERNEL_MODE_TRAP_M",
    0x1000008E: "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M",
    0x100000EA: "THREAD_STUCK_IN_DEVICE_DRIVER_M",
    0x4000008A: "THREAD_TERMINATE_HELD_MUTEX",
    0xC0000218: "STATUS_CANNOT_LOAD_REGISTRY_FILE",
    0xC000021A: "WINLOGON_FATAL_ERROR",
    0xC0000221: "STATUS_IMAGE_CHECKSUM_MISMATCH",
    0xDEADDEAD: "MANUALLY_INITIATED_CRASH1",
}

_LINE_RE = re.compile(r"panic\s+hyper-v\s*:\s*(?P<args>.*)", re.IGNORECASE)
_ARG_RE = re.compile(r"arg(?P<n>[1-5])\s*[=:]\s*['\"]?(?P<v>0[xX][0-9a-fA-F]+|\d+)['\"]?")


def name(code: int) -> str:
    """The bug check's symbolic name, ``UNKNOWN_BUGCHECK`` for a code not in the table."""
    return BUGCHECKS.get(code, "UNKNOWN_BUGCHECK")


def title(code: int) -> str:
    """``0x0000003B SYSTEM_SERVICE_EXCEPTION``: the code as Windows shows it, and its name."""
    return f"0x{code:08X} {name(code)}"


def _to_int(value: int | str) -> int:
    return value if isinstance(value, int) else int(str(value), 0)


def report(
    code: int | str, parameters: tuple[int | str, ...] = (), text: str = "", start: int = 0, end: int = 0
) -> Report:
    """A BSOD report for a bug-check ``code`` and its (up to four) parameters."""
    code = _to_int(code)
    params = tuple(f"0x{_to_int(p):x}" for p in parameters[:4])
    params += ("0x0",) * (4 - len(params))
    return Report(
        title=title(code), kind=KIND, function="", start=start, end=end, text=text, corrupted=False, parameters=params
    )


def parse_panic_line(line: str) -> Report | None:
    """Read libvirt's ``panic hyper-v: arg1='0x..', ...`` line; None if it is not one."""
    m = _LINE_RE.search(line)
    if m is None:
        return None
    args = {int(a.group("n")): a.group("v") for a in _ARG_RE.finditer(m.group("args"))}
    if 1 not in args:
        return None
    return report(args[1], tuple(args.get(n, "0") for n in (2, 3, 4, 5)), text=line.strip())


def parse_domain_log(text: str) -> Report | None:
    """The first Hyper-V guest panic in a libvirt domain log, with its offsets."""
    pos = 0
    for line in text.splitlines(keepends=True):
        rep = parse_panic_line(line)
        if rep is not None:
            return Report(
                title=rep.title, kind=rep.kind, start=pos, end=pos + len(line), text=rep.text, parameters=rep.parameters
            )
        pos += len(line)
    return None


def _info_arg(info: Mapping[str, object], key: str) -> int | str:
    value = info.get(key, 0)
    return value if isinstance(value, int | str) else str(value)


def from_panic_info(info: Mapping[str, object]) -> Report | None:
    """From QEMU's ``GUEST_PANICKED`` event info (``{"type": "hyper-v", "arg1": 59, ...}``)."""
    if str(info.get("type", "")).lower() != "hyper-v" or "arg1" not in info:
        return None
    return report(_info_arg(info, "arg1"), tuple(_info_arg(info, f"arg{n}") for n in (2, 3, 4, 5)))


# --- the serial console (Emergency Management Services) ---------------------------------
_STOP_RE = re.compile(
    r"\*\*\* STOP: (?P<code>0[xX][0-9a-fA-F]+)(?:\s*\((?P<params>[^)]*)\))?",
)
_EMS_RE = re.compile(
    r'<PROPERTY\s+NAME="STOPCODE"[^>]*>\s*<VALUE>\s*"?(?P<code>0[xX][0-9a-fA-F]+)"?\s*</VALUE>', re.IGNORECASE
)


def parse_console_line(line: str) -> Report | None:
    """A bug check named on a Windows serial console line (EMS ``STOPCODE`` property or a
    ``*** STOP:`` line), or None."""
    m = _STOP_RE.search(line)
    if m is not None:
        params = tuple(p.strip() for p in (m.group("params") or "").split(",") if p.strip())
        try:
            return report(m.group("code"), params, text=line.strip())
        except ValueError:  # a parameter that is not a number: keep the code
            return report(m.group("code"), (), text=line.strip())
    m = _EMS_RE.search(line)
    if m is not None:
        return report(m.group("code"), (), text=line.strip())
    return None


class ConsoleWatcher(LineWatcher):
    """The Windows counterpart of :class:`hil.crash.stream.ConsoleWatcher`: feed serial console
    chunks, get a BSOD :class:`Report` per bug check named on it (the same stop code printed
    twice, as EMS's XML and its text, is one report).  Offsets count characters since the first
    :meth:`feed`."""

    @property
    def busy(self) -> bool:
        """Never: a bug check is named by one line."""
        return False

    def _line(self, start: int, end: int, line: str) -> None:
        rep = parse_console_line(line)
        if rep is None or any(r.title == rep.title for r in self.reports):
            return
        rep = Report(title=rep.title, kind=rep.kind, start=start, end=end, text=rep.text, parameters=rep.parameters)
        self.reports.append(rep)
        if self.on_report is not None:
            self.on_report(rep)
