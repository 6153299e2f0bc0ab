//! Hands out link slots (indices into the per-link arrays) and takes them back.

/// Lowest free index first, so a long run that adds and removes links stays compact.
#[derive(Debug)]
pub struct Slots {
    capacity: u32,
    next_unused: u32,
    free: std::collections::BTreeSet<u32>,
}

impl Slots {
    pub fn new(capacity: u32) -> Self {
        Slots {
            capacity,
            next_unused: 0,
            free: Default::default(),
        }
    }

    pub fn take(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop_first() {
            return Some(i);
        }
        if self.next_unused < self.capacity {
            self.next_unused += 1;
            return Some(self.next_unused - 1);
        }
        None
    }

    pub fn give_back(&mut self, index: u32) {
        debug_assert!(index < self.next_unused && !self.free.contains(&index));
        self.free.insert(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_lowest_first_and_run_out() {
        let mut s = Slots::new(3);
        assert_eq!((s.take(), s.take(), s.take()), (Some(0), Some(1), Some(2)));
        assert_eq!(s.take(), None);
        s.give_back(2);
        s.give_back(0);
        assert_eq!((s.take(), s.take(), s.take()), (Some(0), Some(2), None));
    }
}
