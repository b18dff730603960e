//! Typed identifiers. Server-issued ids are a prefix plus random characters; names chosen by
//! users (room names, identities) are validated once, here, at the boundary.

use std::fmt;

use crate::random::random_chars;

/// Characters of server-issued ids.
const SID_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

macro_rules! sid {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new random id (72 bits of a CSPRNG).
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, random_chars(SID_ALPHABET, 12)))
            }

            /// Accepts an id given back by a client; only the shape is checked.
            pub fn parse(s: &str) -> Option<Self> {
                (s.starts_with($prefix) && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    .then(|| $name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

sid!(
    /// A room incarnation: a deleted and re-created room gets a new one.
    RoomSid,
    "RM_"
);
sid!(
    /// A participant session: every Join gets a new one.
    ParticipantSid,
    "PA_"
);
sid!(
    /// A published track.
    TrackSid,
    "TR_"
);

/// Why a user-chosen name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} `{value}` may only contain letters, digits, '-', '_', '.', '@' and ':'")]
    BadChar { what: &'static str, value: String },
}

fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
    {
        return Err(NameError::BadChar {
            what,
            value: s.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// A room's name, chosen by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check_name("room name", s, 128)?;
        Ok(RoomName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A participant's identity within a room (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

impl Identity {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check_name("identity", s, 256)?;
        Ok(Identity(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A media shard (one core, one UDP port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

pub use ringcast_types::TransportId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_have_prefix_and_differ() {
        let a = RoomSid::generate();
        let b = RoomSid::generate();
        assert!(a.as_str().starts_with("RM_"));
        assert_eq!(a.as_str().len(), 15);
        assert_ne!(a, b);
        assert_eq!(RoomSid::parse(a.as_str()), Some(a));
        assert_eq!(TrackSid::parse("RM_abc"), None);
        assert_eq!(TrackSid::parse("TR_a b"), None);
    }

    #[test]
    fn names_are_validated() {
        assert!(RoomName::new("daily-standup_1.eu").is_ok());
        assert_eq!(
            RoomName::new(""),
            Err(NameError::Empty { what: "room name" })
        );
        assert!(matches!(
            RoomName::new("a/b"),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            RoomName::new(&"x".repeat(129)),
            Err(NameError::TooLong { len: 129, .. })
        ));
        assert!(Identity::new("user@example.com").is_ok());
        assert!(Identity::new("bob smith").is_err());
    }
}
