//! A byte-bounded image cache: least recently used out, so a burst of requests for many images
//! cannot grow the server without limit.

use std::collections::HashMap;
use std::sync::Arc;

use ota_core::wire::ImageId;

/// Images in memory, at most `limit` bytes in all (one image larger than the limit is kept
/// alone).
#[derive(Debug)]
pub struct ImageCache {
    limit: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<ImageId, (Arc<[u8]>, u64)>,
}

impl ImageCache {
    /// Empty, holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The image, marked as just used.
    pub fn get(&mut self, id: ImageId) -> Option<Arc<[u8]>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&id).map(|(b, used)| {
            *used = tick;
            b.clone()
        })
    }

    /// Adds an image, evicting the least recently used until it fits.
    pub fn insert(&mut self, id: ImageId, bytes: Arc<[u8]>) {
        self.tick += 1;
        if let Some((old, _)) = self.entries.remove(&id) {
            self.bytes -= old.len();
        }
        while self.bytes + bytes.len() > self.limit {
            let Some(victim) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&victim) {
                self.bytes -= old.len();
            }
        }
        self.bytes += bytes.len();
        self.entries.insert(id, (bytes, self.tick));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_the_limit_holds() {
        let mut c = ImageCache::new(100);
        c.insert(ImageId(1), Arc::from(vec![0u8; 40]));
        c.insert(ImageId(2), Arc::from(vec![0u8; 40]));
        assert!(c.get(ImageId(1)).is_some());
        c.insert(ImageId(3), Arc::from(vec![0u8; 40]));
        assert!(c.get(ImageId(2)).is_none(), "2 was least recently used");
        assert!(c.get(ImageId(1)).is_some() && c.get(ImageId(3)).is_some());
        assert_eq!(c.bytes(), 80);
        for i in 10..100 {
            c.insert(ImageId(i), Arc::from(vec![0u8; 30]));
            assert!(c.bytes() <= 100);
        }
    }
}
