"""NVMe completion status: decode the 15-bit value the kernel reports, name it, raise on it.

Owns the status-code tables (names as in the NVMe Base spec 2.x / libnvme) and the
mapping to NvmeError; it never sees a device. The kernel hands back the CQE status
field shifted right by one (phase bit dropped): bits 7:0 SC, 10:8 SCT, 12:11 CRD,
13 More, 14 DNR — the same encoding for ioctl return values and ``cqe.res > 0``.
Surprise: SC values are only unique within an SCT (0x80 is "LBA Out of Range" in generic
status and "Write Fault" in media errors), so always look names up by (SCT, SC).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DeviceError, NvmeError

SCT_GENERIC = 0x0
SCT_COMMAND_SPECIFIC = 0x1
SCT_MEDIA = 0x2
SCT_PATH = 0x3
SCT_VENDOR = 0x7

SCT_NAMES = {0: "Generic Command Status", 1: "Command Specific Status",
             2: "Media and Data Integrity Errors", 3: "Path Related Status", 7: "Vendor Specific"}

GENERIC_STATUS = {
    0x00: "Successful Completion",
    0x01: "Invalid Command Opcode",
    0x02: "Invalid Field in Command",
    0x03: "Command ID Conflict",
    0x04: "Data Transfer Error",
    0x05: "Commands Aborted due to Power Loss Notification",
    0x06: "Internal Error",
    0x07: "Command Abort Requested",
    0x08: "Command Aborted due to SQ Deletion",
    0x09: "Command Aborted due to Failed Fused Command",
    0x0A: "Command Aborted due to Missing Fused Command",
    0x0B: "Invalid Namespace or Format",
    0x0C: "Command Sequence Error",
    0x0D: "Invalid SGL Segment Descriptor",
    0x0E: "Invalid Number of SGL Descriptors",
    0x0F: "Data SGL Length Invalid",
    0x10: "Metadata SGL Length Invalid",
    0x11: "SGL Descriptor Type Invalid",
    0x12: "Invalid Use of Controller Memory Buffer",
    0x13: "PRP Offset Invalid",
    0x14: "Atomic Write Unit Exceeded",
    0x15: "Operation Denied",
    0x16: "SGL Offset Invalid",
    0x18: "Host Identifier Inconsistent Format",
    0x19: "Keep Alive Timer Expired",
    0x1A: "Keep Alive Timeout Invalid",
    0x1B: "Command Aborted due to Preempt and Abort",
    0x1C: "Sanitize Failed",
    0x1D: "Sanitize In Progress",
    0x1E: "SGL Data Block Granularity Invalid",
    0x1F: "Command Not Supported for Queue in CMB",
    0x20: "Namespace is Write Protected",
    0x21: "Command Interrupted",
    0x22: "Transient Transport Error",
    0x23: "Command Prohibited by Command and Feature Lockdown",
    0x24: "Admin Command Media Not Ready",
    0x25: "Invalid Key Tag",
    0x26: "Host Dispersed Namespace Support Not Enabled",
    0x27: "Host Identifier Not Initialized",
    0x28: "Incorrect Key",
    0x29: "FDP Disabled",
    0x2A: "Invalid Placement Handle List",
    # NVM command set specific generic values
    0x80: "LBA Out of Range",
    0x81: "Capacity Exceeded",
    0x82: "Namespace Not Ready",
    0x83: "Reservation Conflict",
    0x84: "Format In Progress",
}

COMMAND_SPECIFIC_STATUS = {
    0x00: "Completion Queue Invalid",
    0x01: "Invalid Queue Identifier",
    0x02: "Invalid Queue Size",
    0x03: "Abort Command Limit Exceeded",
    0x05: "Asynchronous Event Request Limit Exceeded",
    0x06: "Invalid Firmware Slot",
    0x07: "Invalid Firmware Image",
    0x08: "Invalid Interrupt Vector",
    0x09: "Invalid Log Page",
    0x0A: "Invalid Format",
    0x0B: "Firmware Activation Requires Conventional Reset",
    0x0C: "Invalid Queue Deletion",
    0x0D: "Feature Identifier Not Saveable",
    0x0E: "Feature Not Changeable",
    0x0F: "Feature Not Namespace Specific",
    0x10: "Firmware Activation Requires NVM Subsystem Reset",
    0x11: "Firmware Activation Requires Controller Level Reset",
    0x12: "Firmware Activation Requires Maximum Time Violation",
    0x13: "Firmware Activation Prohibited",
    0x14: "Overlapping Range",
    0x15: "Namespace Insufficient Capacity",
    0x16: "Namespace Identifier Unavailable",
    0x18: "Namespace Already Attached",
    0x19: "Namespace Is Private",
    0x1A: "Namespace Not Attached",
    0x1B: "Thin Provisioning Not Supported",
    0x1C: "Controller List Invalid",
    0x1D: "Device Self-test In Progress",
    0x1E: "Boot Partition Write Prohibited",
    0x1F: "Invalid Controller Identifier",
    0x20: "Invalid Secondary Controller State",
    0x21: "Invalid Number of Controller Resources",
    0x22: "Invalid Resource Identifier",
    0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
    0x24: "ANA Group Identifier Invalid",
    0x25: "ANA Attach Failed",
    0x26: "Insufficient Capacity",
    0x27: "Namespace Attachment Limit Exceeded",
    0x28: "Prohibition of Command Execution Not Supported",
    0x29: "I/O Command Set Not Supported",
    0x2A: "I/O Command Set Not Enabled",
    0x2B: "I/O Command Set Combination Rejected",
    0x2C: "Invalid I/O Command Set",
    0x2D: "Identifier Unavailable",
    # NVM command set specific
    0x80: "Conflicting Attributes",
    0x81: "Invalid Protection Information",
    0x82: "Attempted Write to Read Only Range",
    0x83: "Command Size Limit Exceeded",
    0xB8: "Zoned Boundary Error",
    0xB9: "Zone Is Full",
    0xBA: "Zone Is Read Only",
    0xBB: "Zone Is Offline",
    0xBC: "Zone Invalid Write",
    0xBD: "Too Many Active Zones",
    0xBE: "Too Many Open Zones",
    0xBF: "Invalid Zone State Transition",
}

MEDIA_ERRORS = {
    0x80: "Write Fault",
    0x81: "Unrecovered Read Error",
    0x82: "End-to-end Guard Check Error",
    0x83: "End-to-end Application Tag Check Error",
    0x84: "End-to-end Reference Tag Check Error",
    0x85: "Compare Failure",
    0x86: "Access Denied",
    0x87: "Deallocated or Unwritten Logical Block",
    0x88: "End-to-End Storage Tag Check Error",
}

PATH_ERRORS = {
    0x00: "Internal Path Error",
    0x01: "Asymmetric Access Persistent Loss",
    0x02: "Asymmetric Access Inaccessible",
    0x03: "Asymmetric Access Transition",
    0x60: "Controller Pathing Error",
    0x70: "Host Pathing Error",
    0x71: "Command Aborted By Host",
}

_TABLES = {SCT_GENERIC: GENERIC_STATUS, SCT_COMMAND_SPECIFIC: COMMAND_SPECIFIC_STATUS,
           SCT_MEDIA: MEDIA_ERRORS, SCT_PATH: PATH_ERRORS}


def status_name(sct: int, sc: int) -> str:
    """The spec name of (SCT, SC), or "Unknown status (SCT x, SC y)"."""
    name = _TABLES.get(sct, {}).get(sc)
    if name is None and sct == SCT_VENDOR:
        return f"Vendor Specific status (SC {sc:#04x})"
    return name or f"Unknown status (SCT {sct:#x}, SC {sc:#04x})"


@dataclass(frozen=True, slots=True)
class NvmeStatus:
    """A decoded completion status (the kernel's 15-bit form)."""

    value: int
    sct: int
    sc: int
    crd: int
    more: bool
    dnr: bool
    name: str

    @property
    def ok(self) -> bool:
        return self.sct == 0 and self.sc == 0

    def __str__(self) -> str:
        extra = "".join([", DNR" if self.dnr else "", ", More" if self.more else "",
                         f", CRD {self.crd}" if self.crd else ""])
        return f"{self.name} (SCT {self.sct:#x}, SC {self.sc:#04x}{extra})"


def decode_status(status: int) -> NvmeStatus:
    """Decode ``cqe.res`` > 0 or a passthrough ioctl's positive return value."""
    if status < 0:
        raise ValueError(f"NVMe status {status} is negative: that is -errno from the kernel, not an NVMe status")
    if status > 0x7FFF:
        raise ValueError(f"NVMe status {status:#x} has bits above 14; pass the status shifted right by one "
                         "(the phase bit dropped), as the kernel reports it")
    sc, sct = status & 0xFF, (status >> 8) & 0x7
    return NvmeStatus(status, sct, sc, (status >> 11) & 0x3, bool(status & (1 << 13)), bool(status & (1 << 14)),
                      status_name(sct, sc))


def encode_status(sct: int, sc: int, *, crd: int = 0, more: bool = False, dnr: bool = False) -> int:
    """The 15-bit value for (SCT, SC, ...) — what an emulated controller reports."""
    if not (0 <= sct <= 7 and 0 <= sc <= 0xFF and 0 <= crd <= 3):
        raise ValueError(f"NVMe status: SCT {sct} (0..7), SC {sc} (0..255) or CRD {crd} (0..3) out of range")
    return sc | (sct << 8) | (crd << 11) | (int(more) << 13) | (int(dnr) << 14)


_HINTS = {
    (SCT_GENERIC, 0x29): "enable FDP in the endurance group (nvme-cli: Set Features 0x1D) or use placement = false",
    (SCT_GENERIC, 0x2A): "use placement identifiers from the RUH Status list of this namespace",
    (SCT_GENERIC, 0x80): "the LBA range is past the end of the namespace; check device.size",
    (SCT_GENERIC, 0x01): "the controller does not implement this command",
    (SCT_COMMAND_SPECIFIC, 0x09): "the controller does not support this log page",
}


def check_status(status: int, path: str | None, what: str, hint: str = "") -> None:
    """Raise for a non-zero completion: NvmeError for NVMe status, DeviceError for -errno."""
    if status == 0:
        return
    if status < 0:
        raise DeviceError(path, what, -status, hint)
    st = decode_status(status)
    raise NvmeError(path, what, st.sct, st.sc, st.name, st.dnr, hint or _HINTS.get((st.sct, st.sc), ""))
