//! The shard's tracks: a slab (dense storage, slots reused after removal) indexed by the control
//! plane's track id. The per-packet maps (SSRC → track) hold slots, so a packet reaches its track
//! without hashing the id; commands, which name ids, go through the index.

use ringcast_types::IdMap;
use slab::Slab;

pub use ringcast_types::TrackId;

/// Where a track lives in the table. Valid until the track is removed; whoever holds one must
/// forget it then (the router's maps are purged on removal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Slot(usize);

/// Tracks by slot and by id.
#[derive(Debug)]
pub(crate) struct Table<T> {
    slab: Slab<T>,
    slots: IdMap<TrackId, Slot>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slab: Slab::new(),
            slots: IdMap::default(),
        }
    }
}

impl<T> Table<T> {
    /// Adds a track (replacing one with the same id) and returns its slot.
    pub fn insert(&mut self, id: TrackId, value: T) -> Slot {
        self.remove(id);
        let slot = Slot(self.slab.insert(value));
        self.slots.insert(id, slot);
        slot
    }

    pub fn remove(&mut self, id: TrackId) -> Option<(Slot, T)> {
        let slot = self.slots.remove(&id)?;
        Some((slot, self.slab.remove(slot.0)))
    }

    pub fn slot(&self, id: TrackId) -> Option<Slot> {
        self.slots.get(&id).copied()
    }

    pub fn get(&self, id: TrackId) -> Option<&T> {
        self.at(self.slot(id)?)
    }

    pub fn at(&self, slot: Slot) -> Option<&T> {
        self.slab.get(slot.0)
    }

    pub fn at_mut(&mut self, slot: Slot) -> Option<&mut T> {
        self.slab.get_mut(slot.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        self.slab.iter().map(|(k, v)| (Slot(k), v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut T)> {
        self.slab.iter_mut().map(|(k, v)| (Slot(k), v))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slab.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slab.iter_mut().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_ids_stay_unique() {
        let mut t: Table<&str> = Table::default();
        let a = t.insert(TrackId(10), "a");
        let b = t.insert(TrackId(11), "b");
        assert_ne!(a, b);
        assert_eq!(t.get(TrackId(11)), Some(&"b"));
        assert_eq!(t.remove(TrackId(10)), Some((a, "a")));
        assert_eq!(t.at(a), None);
        let c = t.insert(TrackId(12), "c");
        assert_eq!(c, a, "the freed slot is reused");
        let b2 = t.insert(TrackId(11), "b2");
        assert_eq!(t.len(), 2, "same id replaces");
        assert_eq!(t.at(b2), Some(&"b2"));
        assert!(t.get(TrackId(10)).is_none());
    }
}
