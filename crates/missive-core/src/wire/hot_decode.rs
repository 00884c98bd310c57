//! A hand-written decoder for the two packets every message brings the
//! server: `send` and `ack`, as encoders write them (keys in declaration
//! order, definite lengths, the shortest heads for the map and the keys,
//! matched as whole byte arrays). Anything else — another packet, keys in
//! another order, any surprise — is left to [`super::decode_packet`], whose
//! answer stays authoritative; this decoder has to be right only when it
//! succeeds, and then it returns exactly the packet the general path
//! returns, having read exactly the payload (the proptests below check
//! both against ciborium). PROTOCOL.md stays the definition of the packets.

use super::ClientPacket;
use super::fast_de::{GiveUp, MAJOR_BYTES, SliceDe};
use crate::{MessageId, SharedBytes, UserName};
use serde::Deserialize;
use serde::de::value::BorrowedStrDeserializer;

/// `payload` as a `send` or an `ack`, or `None`: decode it the general way.
pub(crate) fn client_packet(payload: &[u8]) -> Option<ClientPacket> {
    let mut de = SliceDe::new(payload);
    let packet = packet(&mut de).ok()?;
    de.at_end().then_some(packet)
}

/// `{"send": {"id": ` with a 16-byte string head.
const SEND_TO_ID: [u8; 11] = [
    0xa1, 0x64, b's', b'e', b'n', b'd', 0xa3, 0x62, b'i', b'd', 0x50,
];
/// `, "to": `
const TO: [u8; 3] = [0x62, b't', b'o'];
/// `, "envelope": `
const ENVELOPE: [u8; 9] = [0x68, b'e', b'n', b'v', b'e', b'l', b'o', b'p', b'e'];
/// `{"ack": {"seq": `
const ACK_TO_SEQ: [u8; 10] = [0xa1, 0x63, b'a', b'c', b'k', 0xa1, 0x63, b's', b'e', b'q'];

fn packet(de: &mut SliceDe<'_>) -> Result<ClientPacket, GiveUp> {
    // {"send": {"id": id, "to": to, "envelope": envelope}} or
    // {"ack": {"seq": seq}}, with the shortest heads for the keys.
    if de.literal(&SEND_TO_ID).is_ok() {
        let id = de.take::<16>()?;
        de.literal(&TO)?;
        // As serde decodes it: validated, then one allocation.
        let to = UserName::deserialize(BorrowedStrDeserializer::<GiveUp>::new(de.text()?))?;
        de.literal(&ENVELOPE)?;
        let envelope = SharedBytes::from(de.string(MAJOR_BYTES)?);
        Ok(ClientPacket::Send {
            id: MessageId(id),
            to,
            envelope,
        })
    } else {
        de.literal(&ACK_TO_SEQ)?;
        Ok(ClientPacket::Ack {
            seq: de.unsigned()?,
        })
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use crate::test_support::{CBOR_HEAD_BOUNDARIES, cbor_length_boundaries};
    use crate::wire::codec::decode_packet_checked;
    use proptest::prelude::*;

    /// The payload of `packet` as ciborium writes it.
    fn ciborium_payload(packet: &ClientPacket) -> Vec<u8> {
        let mut payload = Vec::new();
        ciborium::into_writer(packet, &mut payload).expect("encodes");
        payload
    }

    fn hot_packet() -> impl Strategy<Value = ClientPacket> {
        let name = "[a-z0-9._-]{1,32}".prop_map(|s| UserName::new(s).expect("valid"));
        let envelope = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            prop::sample::select(cbor_length_boundaries().collect::<Vec<_>>())
                .prop_map(|len| vec![0x5a; len]),
        ];
        prop_oneof![
            (any::<[u8; 16]>(), name, envelope).prop_map(|(id, to, envelope)| {
                ClientPacket::Send {
                    id: MessageId(id),
                    to,
                    envelope: envelope.into(),
                }
            }),
            prop_oneof![
                prop::sample::select(CBOR_HEAD_BOUNDARIES.to_vec()),
                any::<u64>()
            ]
            .prop_map(|seq| ClientPacket::Ack { seq }),
        ]
    }

    /// A change to an encoding: a byte replaced, inserted or removed, or
    /// the payload cut short.
    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
        let len = bytes.len();
        match *mutation {
            Mutation::Replace(at, b) if len > 0 => bytes[at % len] = b,
            Mutation::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Mutation::Remove(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
        bytes
    }

    proptest! {
        /// Every `send` and `ack` as ciborium writes it is decoded here.
        #[test]
        fn decodes_what_ciborium_writes(packet in hot_packet()) {
            prop_assert_eq!(client_packet(&ciborium_payload(&packet)), Some(packet));
        }

        /// Whatever it accepts, the general path (scan, then ciborium)
        /// decodes to the same packet.
        #[test]
        fn agrees_with_the_general_path(
            packet in hot_packet(),
            mutations in proptest::collection::vec(mutation(), 1..4),
        ) {
            let bytes = mutations.iter().fold(ciborium_payload(&packet), mutate);
            if let Some(hot) = client_packet(&bytes) {
                prop_assert_eq!(decode_packet_checked::<ClientPacket>(&bytes), Ok(hot));
            }
        }

        #[test]
        fn arbitrary_bytes_are_decoded_only_as_the_general_path_does(bytes in any::<Vec<u8>>()) {
            if let Some(hot) = client_packet(&bytes) {
                prop_assert_eq!(decode_packet_checked::<ClientPacket>(&bytes), Ok(hot));
            }
        }
    }

    #[test]
    fn other_packets_and_other_key_orders_are_left_to_the_general_path() {
        assert_eq!(client_packet(&ciborium_payload(&ClientPacket::Ping)), None);
        // {"ack": {"seq": 1}} with an unknown extra key.
        let extra_key = [
            0xa1, 0x63, b'a', b'c', b'k', 0xa2, 0x63, b's', b'e', b'q', 0x01, 0x61, b'x', 0x01,
        ];
        assert_eq!(client_packet(&extra_key), None);
    }
}
