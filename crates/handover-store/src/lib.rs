//! Read-model storage on sled: the only crate that talks to sled.
//!
//! Each projection owns one tree. A [`Tx`] collects a projection's reads and writes for a
//! batch of events; [`Tree::commit`] applies them **and the new stream position** in one
//! atomic sled batch and flushes it to disk before returning, so a crash either keeps both
//! or neither, and the caller acknowledges the stream only after `commit` returns.

use std::collections::BTreeMap;
use std::path::Path;

/// The key under which a tree keeps its stream position. Data keys never start with 0x00.
const POSITION_KEY: &[u8] = b"\x00position";

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (IO, corruption, lock held by another process).
    #[error("read-model store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored position is not 8 bytes.
    #[error("read-model store: corrupt position in tree {0}")]
    CorruptPosition(String),
}

/// The read-model database.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(128 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(Store { db })
    }

    /// A tree for a projection (`name`), created on first use.
    pub fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        Ok(Tree {
            name: name.to_string(),
            tree: self.db.open_tree(name)?,
        })
    }

    /// Drops a tree and everything in it.
    pub fn drop_tree(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.drop_tree(name)?)
    }

    /// The names of all projection trees.
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .filter(|n| n != "__sled__default")
            .collect()
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Flushes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// One projection's tree.
#[derive(Clone, Debug)]
pub struct Tree {
    name: String,
    tree: sled::Tree,
}

impl Tree {
    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream position of the last committed batch (0 when none).
    pub fn position(&self) -> Result<u64, StoreError> {
        match self.tree.get(POSITION_KEY)? {
            None => Ok(0),
            Some(v) => {
                let bytes: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::CorruptPosition(self.name.clone()))?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    /// Reads a value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.tree.scan_prefix(prefix).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// Starts a transaction over this tree.
    pub fn begin(&self) -> Tx<'_> {
        Tx {
            tree: self,
            writes: BTreeMap::new(),
        }
    }

    /// Applies `tx`'s writes and sets the position to `position` atomically, then flushes.
    pub async fn commit(&self, tx: Tx<'_>, position: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in tx.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(POSITION_KEY, &position.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Removes every entry, including the position.
    pub fn clear(&self) -> Result<(), StoreError> {
        Ok(self.tree.clear()?)
    }

    /// Number of entries (excluding the position).
    pub fn len(&self) -> usize {
        self.tree.len().saturating_sub(usize::from(
            self.tree.contains_key(POSITION_KEY).unwrap_or(false),
        ))
    }

    /// True when the tree holds no data entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pending reads-through and writes of one batch.
pub struct Tx<'a> {
    tree: &'a Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Tx<'_> {
    /// Reads a value, seeing this transaction's own writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.tree.get(key),
        }
    }

    /// Writes a value.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        debug_assert!(
            key.first() != Some(&0),
            "keys starting with 0x00 are reserved"
        );
        self.writes.insert(key, Some(value));
    }

    /// Removes a value.
    pub fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Number of pending writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // sled's flush_async completes without a runtime; a minimal executor is enough here.
        futures_lite_block_on(f)
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};
        struct Thread(std::thread::Thread);
        impl Wake for Thread {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(std::sync::Arc::new(Thread(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn data_and_position_commit_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let tree = store.tree("journey").unwrap();
            assert_eq!(tree.position().unwrap(), 0);
            let mut tx = tree.begin();
            tx.put(b"p/a".to_vec(), b"1".to_vec());
            assert_eq!(tx.get(b"p/a").unwrap(), Some(b"1".to_vec()));
            assert_eq!(tree.get(b"p/a").unwrap(), None, "not visible before commit");
            block_on(tree.commit(tx, 42)).unwrap();
            let mut tx = tree.begin();
            tx.remove(b"p/a".to_vec());
            tx.put(b"p/b".to_vec(), b"2".to_vec());
            // dropped without commit: nothing happens
            drop(tx);
        }
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("journey").unwrap();
        assert_eq!(tree.position().unwrap(), 42);
        assert_eq!(tree.get(b"p/a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(tree.get(b"p/b").unwrap(), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.scan_prefix(b"p/").count(), 1);
    }
}
