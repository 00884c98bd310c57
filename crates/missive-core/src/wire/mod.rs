//! Wire format: 4-byte big-endian length prefix + one CBOR packet.

pub mod packet;

pub use packet::{ClientPacket, ErrorCode, Notice, ServerPacket, WireLimits, PROTOCOL_VERSION};
