"""NVMe as data: command encoders, Identify and FDP log-page parsers, status decoding.

Owns bytes <-> frozen dataclasses for everything flashcache sends to or reads from an
NVMe controller; it must not open files, issue ioctls or touch io_uring (devices/ does
that, and the emulated SSD answers with the same ``pack()`` methods). Surprise: many wire
counts are 0's based (NLB, NUMD, FDP config N, MOS); the API takes natural counts.
Modules: constants, commands, identify, fdp, status, jsonfmt (nvme-cli output shapes).
"""
from __future__ import annotations

from .constants import *  # noqa: F401,F403  (the spec's numbers, one namespace)
from .commands import (DsmRange, FeatureRequest, IoMgmtRequest, LogPageRequest, NvmeCommand, decode_features,
                       decode_get_log_page, decode_io_mgmt, describe, dsm_deallocate, flush_cmd, get_features,
                       get_features_fdp, get_features_fdp_events, get_log_page, identify_cmd,
                       identify_controller, identify_independent_namespace, identify_namespace,
                       io_mgmt_recv_ruh_status, io_mgmt_send_ruh_update, pack_dsm_ranges,
                       pack_fdp_event_types, pack_ruh_update_pids, parse_dsm_ranges,
                       parse_ruh_update_pids, read_cmd, set_features, set_features_fdp,
                       set_features_fdp_events, write_cmd)
from .fdp import (FdpConfigDescriptor, FdpConfigsLog, FdpEvent, FdpEventDescriptor, FdpEventsLog,
                  FdpFeature, FdpRuhDescriptor, FdpStatsLog, RuhStatus, RuhStatusDescriptor,
                  RuhUsageDescriptor, RuhUsageLog, encode_fdpa, pack_media_reallocated)
from .identify import IdentifyController, IdentifyIndependentNamespace, IdentifyNamespace, LbaFormat
from .status import (NvmeStatus, check_status, decode_status, encode_status, status_name)
from . import jsonfmt  # noqa: F401
