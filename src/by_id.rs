//! A table of values found by the request id each one holds: no key is kept beside a value,
//! since it would repeat the id. The live requests of a gate and the rows of the memory store
//! are kept this way.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::id::RequestId;

/// A value that holds the id it is found by.
pub(crate) trait HasId {
    fn id(&self) -> RequestId;
}

/// Values by the request id each one holds. FxHash: ids are the gate's own, and a lookup by a
/// made-up id only probes.
pub(crate) struct ById<T> {
    table: HashTable<T>,
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        ById {
            table: HashTable::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ById<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.table.iter()).finish()
    }
}

fn hash(id: &RequestId) -> u64 {
    FxBuildHasher.hash_one(id)
}

impl<T: HasId> ById<T> {
    pub(crate) fn get(&self, id: &RequestId) -> Option<&T> {
        self.table.find(hash(id), |value| value.id() == *id)
    }

    pub(crate) fn get_mut(&mut self, id: &RequestId) -> Option<&mut T> {
        self.table.find_mut(hash(id), |value| value.id() == *id)
    }

    /// Adds `value` unless a value with its id is there already, which is then kept and
    /// `value` handed back. Inlined: a value is a whole slot or row, better built in place.
    #[inline]
    pub(crate) fn insert_new(&mut self, value: T) -> Result<(), T> {
        let id = value.id();
        match self
            .table
            .entry(hash(&id), |v| v.id() == id, |v| hash(&v.id()))
        {
            hashbrown::hash_table::Entry::Occupied(_) => Err(value),
            hashbrown::hash_table::Entry::Vacant(place) => {
                place.insert(value);
                Ok(())
            }
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, id: &RequestId) -> Option<T> {
        let found = self.table.find_entry(hash(id), |value| value.id() == *id);
        found.ok().map(|entry| entry.remove().0)
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&mut T) -> bool) {
        self.table.retain(keep);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.table.iter()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.table.iter_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Row(RequestId, u32);

    impl HasId for Row {
        fn id(&self) -> RequestId {
            self.0
        }
    }

    #[test]
    fn values_are_found_by_their_id_and_an_id_is_held_once() {
        let mut table = ById::default();
        let ids: Vec<RequestId> = (0..100).map(|_| RequestId::random()).collect();
        for (n, id) in ids.iter().enumerate() {
            table.insert_new(Row(*id, n as u32)).unwrap();
        }
        assert_eq!(table.insert_new(Row(ids[7], 0)), Err(Row(ids[7], 0)));
        assert_eq!(table.get(&ids[7]), Some(&Row(ids[7], 7)));
        table.get_mut(&ids[8]).unwrap().1 = 80;
        assert_eq!(table.remove(&ids[8]), Some(Row(ids[8], 80)));
        assert!(table.get(&ids[8]).is_none() && table.get(&RequestId::random()).is_none());
        table.retain(|row| row.1 % 2 == 0);
        assert_eq!(table.len(), 49);
        assert!(table.values().all(|row| row.1 % 2 == 0));
    }
}
