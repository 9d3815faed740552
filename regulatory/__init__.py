"""Regulatory documentation: the 510(k) technical packet of one evaluated model version.

The packet RECEIVES metrics (from `model_core.evaluation`) and the gate decision; it computes none.
"""

from regulatory.packet import (
    PacketInputs,
    PacketVerificationError,
    build_packet,
    load_predicate,
    packet_document,
    software_versions,
    verify_packet,
)

__all__ = [
    "PacketInputs",
    "PacketVerificationError",
    "build_packet",
    "load_predicate",
    "packet_document",
    "software_versions",
    "verify_packet",
]
