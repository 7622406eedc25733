//! The memory store's audit trail: its most recent entries, each encoded into a few dozen bytes
//! in chunks of 64 KiB, rather than kept as an [`AuditEntry`] of 192 bytes with allocations of
//! its own. An entry never spans two chunks; a chunk is freed once every entry in it is gone,
//! or kept to be filled again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::args::ArgsDigest;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::id::{RequestId, RuleId};
use crate::scope::Scope;

/// The size of a chunk; an entry larger than this gets a chunk of its own size.
const CHUNK: usize = 64 * 1024;

/// The `capacity` most recent entries, oldest first.
pub(super) struct Trail {
    chunks: VecDeque<Vec<u8>>,
    /// The last chunk emptied, kept for the next one needed: once the trail is full, a chunk
    /// is emptied at the front about when one is needed at the back, and reusing it spares the
    /// allocator a large allocation and free each time.
    spare: Option<Vec<u8>>,
    /// Where the oldest entry starts in the first chunk.
    front: usize,
    len: usize,
    capacity: usize,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Trail {
    pub(super) fn new(capacity: usize) -> Self {
        Trail {
            chunks: VecDeque::new(),
            spare: None,
            front: 0,
            len: 0,
            capacity,
        }
    }

    /// Keeps `entry` as number `seq`, forgetting the oldest entry if the trail is full.
    pub(super) fn push(&mut self, entry: &AuditEntry, seq: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.len == self.capacity {
            self.pop_front();
        }
        let head = Head::of(entry, seq);
        let texts = texts(entry);
        let body = head.len
            + texts
                .iter()
                .flatten()
                .map(|t| varint_len(t.len() as u64) + t.len())
                .sum::<usize>();
        let size = varint_len(body as u64) + body;
        let room = self
            .chunks
            .back()
            .is_some_and(|chunk| chunk.capacity() - chunk.len() >= size);
        if !room {
            let chunk = match self.spare.take() {
                Some(spare) if spare.capacity() >= size => spare,
                _ => Vec::with_capacity(size.max(CHUNK)),
            };
            self.chunks.push_back(chunk);
        }
        if let Some(chunk) = self.chunks.back_mut() {
            put_varint(chunk, body as u64);
            chunk.extend_from_slice(&head.bytes[..head.len]);
            for text in texts.into_iter().flatten() {
                put_varint(chunk, text.len() as u64);
                chunk.extend_from_slice(text.as_bytes());
            }
            self.len += 1;
        }
    }

    fn pop_front(&mut self) {
        let several = self.chunks.len() > 1;
        let Some(first) = self.chunks.front_mut() else {
            return;
        };
        let (body, prefix) = varint(&first[self.front..]);
        self.front += prefix + body as usize;
        self.len -= 1;
        if self.front == first.len() {
            if several {
                self.spare = self.chunks.pop_front().filter(|c| c.capacity() == CHUNK);
                if let Some(spare) = &mut self.spare {
                    spare.clear();
                }
            } else {
                first.clear();
            }
            self.front = 0;
        }
    }

    /// The oldest entries `filter` selects, at most its limit.
    pub(super) fn find(&self, filter: &AuditFilter) -> Vec<AuditEntry> {
        let records = self.chunks.iter().enumerate().flat_map(|(i, chunk)| {
            let start = if i == 0 { self.front } else { 0 };
            Records(&chunk[start..])
        });
        records
            .map(Decoded::of)
            .filter(|e| filter.selects(e.seq, e.at, e.event, e.request, e.principal, e.capability))
            .take(filter.effective_limit())
            .map(|e| e.entry())
            .collect()
    }
}

/// The bodies of the entries in a run of bytes, each after its length.
struct Records<'a>(&'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let (len, prefix) = varint(self.0);
        let (body, rest) = self.0[prefix..].split_at(len as usize);
        self.0 = rest;
        Some(body)
    }
}

// Which optional fields an entry has: one bit each.
const REQUEST: u8 = 1;
const RULE: u8 = 1 << 1;
const PRINCIPAL: u8 = 1 << 2;
const DIGEST: u8 = 1 << 3;
const ARGS: u8 = 1 << 4;
const APPROVER: u8 = 1 << 5;
const REASON: u8 = 1 << 6;
const DETAIL: u8 = 1 << 7;

/// The fixed part of an entry's body: seq (varint); which optional fields it has (1 byte);
/// event, scope and whether `at` is before the epoch (1 byte each); `at` as seconds (varint)
/// and nanoseconds (4 bytes); then request, rule and digest if present. The texts follow it,
/// the capability first and then those present, each as its length (varint) and its bytes; the
/// whole body is preceded by its length (varint).
struct Head {
    bytes: [u8; 10 + 4 + 10 + 4 + 16 + 16 + 32],
    len: usize,
}

impl Head {
    fn of(e: &AuditEntry, seq: u64) -> Head {
        let mut head = Head {
            bytes: [0; 92],
            len: 0,
        };
        let (before_epoch, since) = match e.at.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => (false, since),
            Err(before) => (true, before.duration()),
        };
        head.varint(seq);
        head.put(&[
            present(e),
            e.event as u8,
            e.scope.map_or(0, |s| s as u8 + 1),
            u8::from(before_epoch),
        ]);
        head.varint(since.as_secs());
        head.put(&since.subsec_nanos().to_le_bytes());
        if let Some(id) = &e.request {
            head.put(&id.0);
        }
        if let Some(id) = &e.rule {
            head.put(&id.0);
        }
        if let Some(digest) = &e.args_digest {
            head.put(digest.as_bytes());
        }
        head
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.put(&[value as u8 | 0x80]);
            value >>= 7;
        }
        self.put(&[value as u8]);
    }
}

/// The texts an entry has, in their encoded order; the capability is always there.
fn texts(e: &AuditEntry) -> [Option<&str>; 6] {
    [
        Some(&e.capability),
        e.principal.as_deref(),
        e.args.as_deref(),
        e.approver.as_deref(),
        e.reason.as_deref(),
        e.detail.as_deref(),
    ]
}

fn present(e: &AuditEntry) -> u8 {
    let bit = |has: bool, bit: u8| if has { bit } else { 0 };
    bit(e.request.is_some(), REQUEST)
        | bit(e.rule.is_some(), RULE)
        | bit(e.principal.is_some(), PRINCIPAL)
        | bit(e.args_digest.is_some(), DIGEST)
        | bit(e.args.is_some(), ARGS)
        | bit(e.approver.is_some(), APPROVER)
        | bit(e.reason.is_some(), REASON)
        | bit(e.detail.is_some(), DETAIL)
}

/// An entry read in place: its texts borrowed from the trail.
struct Decoded<'a> {
    seq: u64,
    at: SystemTime,
    event: AuditEvent,
    scope: Option<Scope>,
    request: Option<RequestId>,
    rule: Option<RuleId>,
    args_digest: Option<ArgsDigest>,
    capability: &'a str,
    principal: Option<&'a str>,
    args: Option<&'a str>,
    approver: Option<&'a str>,
    reason: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> Decoded<'a> {
    fn of(body: &'a [u8]) -> Self {
        let mut r = Reader(body);
        let seq = r.varint();
        let [present, event, scope, before_epoch] = r.array();
        let since = Duration::new(r.varint(), u32::from_le_bytes(r.array()));
        let at = if before_epoch == 1 {
            SystemTime::UNIX_EPOCH - since
        } else {
            SystemTime::UNIX_EPOCH + since
        };
        let request = (present & REQUEST != 0).then(|| RequestId(r.array()));
        let rule = (present & RULE != 0).then(|| RuleId(r.array()));
        let args_digest = (present & DIGEST != 0).then(|| ArgsDigest::from_bytes(r.array()));
        let capability = r.text();
        let mut text = |bit: u8| (present & bit != 0).then(|| r.text());
        let principal = text(PRINCIPAL);
        let args = text(ARGS);
        let approver = text(APPROVER);
        let reason = text(REASON);
        let detail = text(DETAIL);
        Decoded {
            seq,
            at,
            event: AuditEvent::ALL[usize::from(event)],
            scope: scope.checked_sub(1).map(|i| Scope::ALL[usize::from(i)]),
            request,
            rule,
            args_digest,
            capability,
            principal,
            args,
            approver,
            reason,
            detail,
        }
    }

    fn entry(&self) -> AuditEntry {
        let mut entry = AuditEntry::new(self.event, self.at, self.capability);
        entry.seq = self.seq;
        entry.request = self.request;
        entry.rule = self.rule;
        entry.principal = self.principal.map(Arc::from);
        entry.args_digest = self.args_digest;
        entry.args = self.args.map(Box::from);
        entry.approver = self.approver.map(Arc::from);
        entry.reason = self.reason.map(Arc::from);
        entry.scope = self.scope;
        entry.detail = self.detail.map(Box::from);
        entry
    }
}

/// Reads an entry's body front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn varint(&mut self) -> u64 {
        let (value, len) = varint(self.0);
        self.0 = &self.0[len..];
        value
    }

    fn text(&mut self) -> &'a str {
        let len = self.varint() as usize;
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text).expect("written from a str")
    }
}

/// Seven bits a byte, low first; the high bit says another byte follows.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    (u64::BITS - value.max(1).leading_zeros()).div_ceil(7) as usize
}

/// The number at the start of `bytes`, and how many bytes it took.
fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0;
    for (i, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(n: u64) -> AuditEntry {
        let mut e = AuditEntry::new(
            AuditEvent::RuleGranted,
            SystemTime::UNIX_EPOCH + Duration::new(1_795_265_100 + n, 123_456_789),
            "payments.refund",
        );
        e.request = Some(RequestId::random());
        e.rule = Some(RuleId::random());
        e.principal = Some("agent-7".into());
        e.args_digest = Some(ArgsDigest::of_canonical("{\"n\":1}"));
        e.args = Some("{\"n\":1}".into());
        e.approver = Some("alice".into());
        e.reason = Some("ticket 4421, ünïcode".into());
        e.scope = Some(Scope::Session);
        e.detail = Some("why".into());
        e
    }

    /// Every field with and without its value, a time before the epoch, an empty text and one
    /// larger than a chunk: what is read back is what was kept, numbered as pushed.
    #[test]
    fn entries_read_back_as_they_were_kept() {
        let mut entries = vec![
            full(0),
            AuditEntry::new(AuditEvent::Requested, SystemTime::UNIX_EPOCH, ""),
        ];
        for field in 0..9 {
            let mut e = full(field);
            match field {
                0 => e.request = None,
                1 => e.rule = None,
                2 => e.principal = None,
                3 => e.args_digest = None,
                4 => e.args = Some("x".repeat(3 * CHUNK).into()),
                5 => e.approver = None,
                6 => e.reason = None,
                7 => e.scope = None,
                _ => e.detail = None,
            }
            entries.push(e);
        }
        let mut early = full(1);
        early.at = SystemTime::UNIX_EPOCH - Duration::new(86_400, 5);
        early.event = *AuditEvent::ALL.last().unwrap();
        early.scope = Some(*Scope::ALL.last().unwrap());
        entries.push(early);

        let mut trail = Trail::new(100);
        let first_seq = u64::MAX - 20;
        for (i, e) in entries.iter().enumerate() {
            trail.push(e, first_seq + i as u64);
        }
        let read = trail.find(&AuditFilter::new());
        assert_eq!(read.len(), entries.len());
        for (i, (read, mut kept)) in read.into_iter().zip(entries).enumerate() {
            kept.seq = first_seq + i as u64;
            assert_eq!(read, kept);
        }
    }

    /// An entry larger than a chunk gets a chunk of its own, which is not kept once the entry
    /// ages out: a trail that once held a huge entry does not hold its memory for ever.
    #[test]
    fn a_huge_entry_is_kept_alone_and_its_memory_given_back() {
        let mut trail = Trail::new(2);
        let mut huge = full(0);
        huge.args = Some("x".repeat(4 * CHUNK).into());
        trail.push(&huge, 1);
        trail.push(&full(2), 2);
        assert_eq!(
            trail.chunks.len(),
            2,
            "the huge entry alone, the small one in a chunk"
        );
        trail.push(&full(3), 3);
        let seqs: Vec<u64> = trail
            .find(&AuditFilter::new())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [2, 3]);
        let held = trail.spare.as_ref().map_or(0, Vec::capacity)
            + trail.chunks.iter().map(Vec::capacity).sum::<usize>();
        assert!(held <= CHUNK, "{held} bytes held after the huge entry went");
    }

    /// Events and scopes are kept as their place in the enum and read back from `ALL`.
    #[test]
    fn events_and_scopes_are_listed_in_their_declared_order() {
        for (i, event) in AuditEvent::ALL.iter().enumerate() {
            assert_eq!(*event as usize, i);
        }
        for (i, scope) in Scope::ALL.iter().enumerate() {
            assert_eq!(*scope as usize, i);
        }
    }

    /// The oldest go first, a chunk is freed once its entries are gone, and a trail of no
    /// capacity keeps nothing.
    #[test]
    fn the_trail_keeps_the_most_recent_entries_and_frees_what_it_forgot() {
        let mut trail = Trail::new(1_000);
        for seq in 1..=100_000 {
            trail.push(&full(seq), seq);
        }
        let kept = trail.find(&AuditFilter::new().limit(1_000));
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (99_001..=100_000).collect::<Vec<_>>());
        let spare = trail.spare.as_ref().map_or(0, Vec::capacity);
        let bytes = spare + trail.chunks.iter().map(Vec::capacity).sum::<usize>();
        // Each of these entries takes under 256 bytes; beyond them, at most the unused end of
        // the last chunk and the spare one.
        assert!(
            bytes <= 1_000 * 256 + 2 * CHUNK,
            "{bytes} bytes for 1,000 entries"
        );

        let page = trail.find(&AuditFilter::new().after(99_500).limit(10));
        assert_eq!(page.first().map(|e| e.seq), Some(99_501));
        assert_eq!(page.len(), 10);

        let mut none = Trail::new(0);
        none.push(&full(1), 1);
        assert!(none.find(&AuditFilter::new()).is_empty() && none.chunks.is_empty());
    }
}
