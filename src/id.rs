//! The ids of access requests and rules: 128 bits with a printed prefix, the time in
//! milliseconds and then 80 random bits, so that ids sort by when they were made, and a store's
//! index of them grows at one end (a database writes a few pages a commit, not one per id).
//!
//! Parsing an id (`FromStr`) answers with [`Error`](crate::Error); that impl lives beside the
//! error type, so the ids depend on nothing above them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `bits` with `millis`, the milliseconds since the Unix epoch, in their first 48 (big-endian).
fn stamped(mut bits: [u8; 16], millis: u64) -> [u8; 16] {
    bits[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bits
}

/// 128 bits from the operating system's random source, read 64 ids at a time per thread: one
/// system call per 64 requests instead of one each.
pub(crate) fn random_bits() -> [u8; 16] {
    use std::cell::RefCell;
    const IDS: usize = 64;
    thread_local! {
        static POOL: RefCell<([[u8; 16]; IDS], usize)> = const { RefCell::new(([[0; 16]; IDS], IDS)) };
    }
    POOL.with_borrow_mut(|(pool, used)| {
        if *used == IDS {
            getrandom::fill(pool.as_flattened_mut())
                .expect("the operating system's random source failed");
            *used = 0;
        }
        let bits = pool[*used];
        // Not kept once handed out.
        pool[*used] = [0; 16];
        *used += 1;
        bits
    })
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) [u8; 16]);

        impl $name {
            /// The printed prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A new id for something made at `time`: its milliseconds, then 80 random bits.
            pub(crate) fn made_at(time: std::time::SystemTime) -> Self {
                let millis = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                $name(stamped(random_bits(), millis))
            }

            /// A new id, made now.
            #[cfg(any(test, feature = "test-util"))]
            pub(crate) fn random() -> Self {
                Self::made_at(std::time::SystemTime::now())
            }

            /// The 128 bits: the time it was made, in milliseconds, then 80 random bits.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// The id with these 128 bits, as a store reads it back.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                crate::hex::write_lower(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

random_id!(
    /// An access request's id: the time it was made and 80 random bits, printed `areq_` and 32
    /// hex digits.
    RequestId,
    "areq_"
);
random_id!(
    /// A rule's id: the time it was made and 80 random bits, printed `rule_` and 32 hex digits.
    RuleId,
    "rule_"
);

#[cfg(test)]
mod pool_tests {
    use std::collections::HashSet;

    use super::{RequestId, RuleId, stamped};

    fn now_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn ids_from_the_pool_are_distinct_across_refills_and_threads() {
        let here: Vec<RequestId> = (0..1_000).map(|_| RequestId::random()).collect();
        let there: Vec<RequestId> =
            std::thread::spawn(|| (0..1_000).map(|_| RequestId::random()).collect())
                .join()
                .unwrap();
        let rules = (0..1_000).map(|_| RuleId::random().0);
        let all: HashSet<[u8; 16]> = here
            .iter()
            .chain(&there)
            .map(|id| id.0)
            .chain(rules)
            .collect();
        assert_eq!(all.len(), 3_000);
        assert!(!all.contains(&[0; 16]), "a used place is never handed out");
    }

    #[test]
    fn ids_begin_with_the_time_and_sort_by_it() {
        let before = now_millis();
        let id = RequestId::random();
        let after = now_millis();
        let mut time = [0; 8];
        time[2..].copy_from_slice(&id.0[..6]);
        let millis = u64::from_be_bytes(time);
        assert!(
            (before..=after).contains(&millis),
            "{before} ≤ {millis} ≤ {after}"
        );
        let (early, late) = (stamped([0xff; 16], millis), stamped([0; 16], millis + 1));
        assert!(early < late, "a later id sorts after an earlier one");
        let random: HashSet<[u8; 10]> = (0..1_000)
            .map(|_| RequestId::random().0[6..].try_into().unwrap())
            .collect();
        assert_eq!(random.len(), 1_000, "the rest is random");
    }
}
