"""NVMe numbers: opcodes, passthrough ioctl/uring_cmd values, log and feature ids.

Owns only integers (no behaviour, no I/O). Spec names, each defined once:
LID log identifier, FID feature identifier, CNS controller-or-namespace structure (Identify),
CSI command set identifier, DTYPE directive type (CDW12 bits 23:20 of Write), DSPEC
directive specific (CDW13 bits 31:16 = the FDP placement identifier, PID), MO management
operation (I/O Management Send/Receive), RUH reclaim unit handle, FDP flexible data placement.
Surprise: the ioctl and uring_cmd numbers encode sizeof() of the kernel struct, so the
72-byte and 80-byte passthrough variants have different numbers for the same command.
"""
from __future__ import annotations

# -- Linux ioctl number encoding (asm-generic/ioctl.h: dir<<30 | size<<16 | type<<8 | nr) --
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, typ: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (typ << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, ord("N"), nr, 0)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, ord("N"), nr, size)


PASSTHRU_CMD_BYTES = 72     # struct nvme_passthru_cmd (== nvme_admin_cmd)
PASSTHRU64_CMD_BYTES = 80   # struct nvme_passthru_cmd64
URING_CMD_BYTES = 72        # struct nvme_uring_cmd

NVME_IOCTL_ID = _io(0x40)                                       # 0x4E40
NVME_IOCTL_ADMIN_CMD = _iowr(0x41, PASSTHRU_CMD_BYTES)          # 0xC0484E41
NVME_IOCTL_IO_CMD = _iowr(0x43, PASSTHRU_CMD_BYTES)             # 0xC0484E43
NVME_IOCTL_RESET = _io(0x44)
NVME_IOCTL_SUBSYS_RESET = _io(0x45)
NVME_IOCTL_RESCAN = _io(0x46)
NVME_IOCTL_ADMIN64_CMD = _iowr(0x47, PASSTHRU64_CMD_BYTES)      # 0xC0504E47
NVME_IOCTL_IO64_CMD = _iowr(0x48, PASSTHRU64_CMD_BYTES)         # 0xC0504E48
NVME_IOCTL_IO64_CMD_VEC = _iowr(0x49, PASSTHRU64_CMD_BYTES)     # 0xC0504E49

# io_uring IORING_OP_URING_CMD cmd_op values (sqe offset 8)
NVME_URING_CMD_IO = _iowr(0x80, URING_CMD_BYTES)                # 0xC0484E80
NVME_URING_CMD_IO_VEC = _iowr(0x81, URING_CMD_BYTES)            # 0xC0484E81
NVME_URING_CMD_ADMIN = _iowr(0x82, URING_CMD_BYTES)             # 0xC0484E82
NVME_URING_CMD_ADMIN_VEC = _iowr(0x83, URING_CMD_BYTES)         # 0xC0484E83

# -- NVM command set I/O opcodes --
NVME_CMD_FLUSH = 0x00
NVME_CMD_WRITE = 0x01
NVME_CMD_READ = 0x02
NVME_CMD_WRITE_UNCOR = 0x04
NVME_CMD_COMPARE = 0x05
NVME_CMD_WRITE_ZEROES = 0x08
NVME_CMD_DSM = 0x09                 # Dataset Management
NVME_CMD_VERIFY = 0x0C
NVME_CMD_IO_MGMT_RECV = 0x12        # I/O Management Receive
NVME_CMD_COPY = 0x19
NVME_CMD_IO_MGMT_SEND = 0x1D        # I/O Management Send

# -- admin opcodes --
NVME_ADMIN_DELETE_SQ = 0x00
NVME_ADMIN_CREATE_SQ = 0x01
NVME_ADMIN_GET_LOG_PAGE = 0x02
NVME_ADMIN_DELETE_CQ = 0x04
NVME_ADMIN_CREATE_CQ = 0x05
NVME_ADMIN_IDENTIFY = 0x06
NVME_ADMIN_ABORT = 0x08
NVME_ADMIN_SET_FEATURES = 0x09
NVME_ADMIN_GET_FEATURES = 0x0A
NVME_ADMIN_ASYNC_EVENT = 0x0C
NVME_ADMIN_NS_MGMT = 0x0D
NVME_ADMIN_FW_COMMIT = 0x10
NVME_ADMIN_FW_DOWNLOAD = 0x11
NVME_ADMIN_NS_ATTACH = 0x15
NVME_ADMIN_DIRECTIVE_SEND = 0x19
NVME_ADMIN_DIRECTIVE_RECV = 0x1A
NVME_ADMIN_FORMAT_NVM = 0x80
NVME_ADMIN_SANITIZE = 0x84

# -- Identify CNS values --
CNS_NAMESPACE = 0x00
CNS_CONTROLLER = 0x01
CNS_ACTIVE_NS_LIST = 0x02
CNS_NS_DESC_LIST = 0x03
CNS_CSI_NAMESPACE = 0x05
CNS_CSI_CONTROLLER = 0x06
CNS_CSI_INDEPENDENT_NAMESPACE = 0x08
CNS_ENDURANCE_GROUP_LIST = 0x19

IDENTIFY_BYTES = 4096

# -- Log identifiers --
LID_ERROR = 0x01
LID_SMART = 0x02
LID_FW_SLOT = 0x03
LID_CMD_EFFECTS = 0x05
LID_ENDURANCE_GROUP = 0x09
LID_FDP_CONFIGS = 0x20          # FDP Configurations
LID_RUH_USAGE = 0x21            # Reclaim Unit Handle Usage
LID_FDP_STATS = 0x22            # FDP Statistics
LID_FDP_EVENTS = 0x23           # FDP Events

# -- Feature identifiers --
FID_FDP = 0x1D
FID_FDP_EVENTS = 0x1E

# Get Features SEL values (CDW10 bits 10:8)
SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = 0, 1, 2, 3

# -- Directive types (Write CDW12 DTYPE) --
DTYPE_NONE = 0
DTYPE_STREAMS = 1
DTYPE_DATA_PLACEMENT = 2        # FDP

# -- I/O Management operations --
IO_MGMT_RECV_MO_NOOP = 0x00
IO_MGMT_RECV_MO_RUH_STATUS = 0x01
IO_MGMT_SEND_MO_NOOP = 0x00
IO_MGMT_SEND_MO_RUH_UPDATE = 0x01

# -- FDP event types (FDP Events log 0x23, Set Features 0x1E) --
FDP_EVENT_RU_NOT_FULLY_WRITTEN = 0x00
FDP_EVENT_RU_TIME_LIMIT_EXCEEDED = 0x01
FDP_EVENT_CTRL_RESET_MODIFIED_RUH = 0x02
FDP_EVENT_INVALID_PID = 0x03
FDP_EVENT_MEDIA_REALLOCATED = 0x80
FDP_EVENT_IMPLICIT_MODIFIED_RUH = 0x81

FDP_EVENT_NAMES = {
    FDP_EVENT_RU_NOT_FULLY_WRITTEN: "Reclaim Unit Not Fully Written",
    FDP_EVENT_RU_TIME_LIMIT_EXCEEDED: "Reclaim Unit Time Limit Exceeded",
    FDP_EVENT_CTRL_RESET_MODIFIED_RUH: "Controller Level Reset Modified Reclaim Unit Handles",
    FDP_EVENT_INVALID_PID: "Invalid Placement Identifier",
    FDP_EVENT_MEDIA_REALLOCATED: "Media Reallocated",
    FDP_EVENT_IMPLICIT_MODIFIED_RUH: "Implicitly Modified Reclaim Unit Handle",
}
HOST_EVENT_TYPES = (0x00, 0x01, 0x02, 0x03)
CONTROLLER_EVENT_TYPES = (0x80, 0x81)

# RUH types (FDP Configurations RUH descriptor RUHT) and attributes (RUH Usage RUHA)
RUHT_INITIALLY_ISOLATED = 1
RUHT_PERSISTENTLY_ISOLATED = 2
RUHA_UNUSED = 0
RUHA_HOST_SPECIFIED = 1
RUHA_CONTROLLER_SPECIFIED = 2

# Sizes
FDP_STATS_LOG_BYTES = 64
FDP_EVENT_BYTES = 64
FDP_EVENTS_MAX = 63                                  # libnvme sizes the log as 63 events
FDP_EVENTS_LOG_BYTES = 64 + FDP_EVENTS_MAX * 64      # 4096
DSM_RANGE_BYTES = 16
DSM_MAX_RANGES = 256

NSID_NONE = 0
NSID_ALL = 0xFFFFFFFF

__all__ = [_n for _n in dir() if _n.isupper()]
