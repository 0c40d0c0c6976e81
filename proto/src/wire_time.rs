//! `google.protobuf.Timestamp` on the wire <-> the nanosecond [`Timestamp`] both services
//! compute with, in one place so every field converts the same way.

use miniprogram_token::Timestamp;

/// An instant as the contract's `google.protobuf.Timestamp`.
pub fn to_proto(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_and_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// A wire timestamp as an instant; `None` when absent or out of range.
pub fn from_proto(t: Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::from_seconds_and_nanos(t.seconds, t.nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_survive_the_round_trip() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(from_proto(Some(to_proto(t))), Some(t));
        assert_eq!(from_proto(None), None);
    }
}
