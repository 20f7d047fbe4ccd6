//! Read-model storage on sled: the only crate that talks to sled.
//!
//! Each projection owns one tree. A [`Tx`] collects a projection's reads and writes for a
//! batch of events; [`Tree::commit`] applies them **and the new stream position** in one
//! atomic sled batch and flushes it to disk before returning, so a crash either keeps both
//! or neither, and the caller acknowledges the stream only after `commit` returns.
//!
//! A [`Tree`] is a handle on a projection's *current* physical sled tree. A rebuild fills a
//! shadow tree ([`Store::shadow`], named `<projection>@<n>`) while the current one keeps
//! serving, then [`Store::promote`] makes the shadow current: the pointer is written to a
//! meta tree (so it survives a restart) and every handle of that projection — the runner's,
//! the API's — sees the new tree from its next read. A [`Tx`] begun on the old tree can no
//! longer commit ([`StoreError::Swapped`]), so a writer never mixes the two.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// The key under which a tree keeps its stream position. Data keys never start with 0x00.
const POSITION_KEY: &[u8] = b"\x00position";

/// The key under which a tree keeps the code version of the projection that wrote it.
const VERSION_KEY: &[u8] = b"\x00version";

/// sled's page cache unless configured: 64 MiB, which keeps a projector at 1M events under
/// 300 MB resident (253 MB peak in the sixth session's runs; sled counts a page by its
/// size on disk, so its real use is well above its nominal cache, the more so the smaller
/// the records; docs/performance.md).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The tree holding which physical tree is current for each projection, and the store's id.
const META_TREE: &str = "__handover_meta";

/// The key of the store's id in [`META_TREE`].
const INSTANCE_KEY: &[u8] = b"instance";

/// The key of where the store was when its id was chosen (host name and directory).
const LOCATION_KEY: &[u8] = b"instance-location";

/// Where a store in `path` is: this machine's host name and the directory's canonical path.
fn location(path: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let dir = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    format!("{}:{}", host.trim(), dir.display())
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (IO, corruption, lock held by another process).
    #[error("read-model store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored position is not 8 bytes.
    #[error("read-model store: corrupt position in tree {0}")]
    CorruptPosition(String),
    /// A stored value could not be decoded by the projection that wrote it.
    #[error("read-model store: corrupt entry in tree {tree}: {detail}")]
    Corrupt {
        /// The tree.
        tree: String,
        /// What was wrong (no identifiers).
        detail: String,
    },
    /// The projection's tree was replaced by a rebuild after this transaction began.
    #[error("read-model store: tree {0} was replaced by a rebuild; the batch was not committed")]
    Swapped(String),
}

#[derive(Clone)]
struct Physical {
    name: String,
    tree: sled::Tree,
    generation: u64,
    /// Held by every [`Tree::pinned`] handle on this physical tree: a promote drops the
    /// tree it replaces only once no read holds it.
    readers: Arc<()>,
}

/// The longest a promote waits for reads pinned on the tree it replaces before dropping it
/// anyway (a read takes milliseconds; one still holding the old tree after this fails).
const PINNED_READ_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

type Slot = Arc<RwLock<Physical>>;

/// The write lock of one projection's tree, shared by all its handles (see
/// [`Tree::begin_exclusive`]).
type Writer = Arc<tokio::sync::Mutex<()>>;

/// The read-model database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    compressed: bool,
    /// See [`location`].
    location: Arc<str>,
    slots: Arc<Mutex<HashMap<String, (Slot, Writer)>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn current_key(name: &str) -> Vec<u8> {
    format!("current/{name}").into_bytes()
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`, with sled's page cache at
    /// [`DEFAULT_CACHE_BYTES`], without compression.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, DEFAULT_CACHE_BYTES, false)
    }

    /// Opens (creating if needed) the store in directory `path`, with a page cache of
    /// `cache_bytes` (more cache, fewer reads from disk once the read models outgrow it, at
    /// the cost of resident memory) and, with `compress`, sled's zstd compression of what
    /// it writes (level 1: measured before the journey records were compressed, at 1M
    /// events 1.3× the logical size on disk instead of 6×, but catch-up about a third slower
    /// and far more memory; docs/performance.md). sled fixes
    /// compression when a store is created: an existing store opens with the setting it was
    /// created with, whatever `compress` says ([`Store::compressed`] tells which).
    pub fn open_with(path: &Path, cache_bytes: u64, compress: bool) -> Result<Store, StoreError> {
        let open = |compress: bool| {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .use_compression(compress)
                .compression_factor(1)
                .mode(sled::Mode::HighThroughput)
                .open()
        };
        let (db, compressed) = match open(compress) {
            Ok(db) => (db, compress),
            Err(sled::Error::Unsupported(why)) if why.contains("use_compression") => {
                (open(!compress)?, !compress)
            }
            Err(e) => return Err(e.into()),
        };
        let meta = db.open_tree(META_TREE)?;
        Ok(Store {
            db,
            meta,
            compressed,
            location: location(path).into(),
            slots: Arc::default(),
        })
    }

    /// Whether the store compresses what it writes (fixed when it was created).
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// The physical tree currently holding projection `name`.
    fn current_physical(&self, name: &str) -> Result<String, StoreError> {
        Ok(self
            .meta
            .get(current_key(name))?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .unwrap_or_else(|| name.to_string()))
    }

    /// A handle on a projection's (`name`) current tree, created on first use. Every handle
    /// of the same projection follows a [`Store::promote`].
    pub fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((slot, writer)) = slots.get(name) {
            return Ok(Tree {
                name: name.to_string(),
                slot: slot.clone(),
                writer: writer.clone(),
            });
        }
        let physical = self.current_physical(name)?;
        let slot = Arc::new(RwLock::new(Physical {
            tree: self.db.open_tree(&physical)?,
            name: physical,
            generation: 0,
            readers: Arc::default(),
        }));
        let writer = Writer::default();
        slots.insert(name.to_string(), (slot.clone(), writer.clone()));
        Ok(Tree {
            name: name.to_string(),
            slot,
            writer,
        })
    }

    /// A new, empty shadow tree for rebuilding projection `name` (`<name>@<n>`), not seen by
    /// readers until [`Store::promote`]d. Shadows left over by an interrupted rebuild are
    /// dropped first.
    pub fn shadow(&self, name: &str) -> Result<Tree, StoreError> {
        self.drop_orphan_shadows(name)?;
        let n = self
            .meta
            .update_and_fetch(format!("next/{name}"), |old| {
                let n = old
                    .and_then(|o| <[u8; 8]>::try_from(o).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        let physical = format!("{name}@{n}");
        let tree = self.db.open_tree(&physical)?;
        tree.clear()?;
        Ok(Tree {
            name: physical.clone(),
            slot: Arc::new(RwLock::new(Physical {
                name: physical,
                tree,
                generation: 0,
                readers: Arc::default(),
            })),
            writer: Writer::default(),
        })
    }

    /// Makes `shadow` (from [`Store::shadow`]) the current tree of projection `name`, durably,
    /// and drops the tree it replaces once no [`Tree::pinned`] read holds it. Handles of
    /// `name` read the new tree from now on; a transaction begun on the old tree fails to
    /// commit with [`StoreError::Swapped`].
    pub async fn promote(&self, name: &str, shadow: &Tree) -> Result<(), StoreError> {
        let (new_name, new_tree) = {
            let p = read(&shadow.slot);
            (p.name.clone(), p.tree.clone())
        };
        new_tree.flush_async().await?;
        self.meta.insert(current_key(name), new_name.as_bytes())?;
        self.meta.flush_async().await?;
        let slot = self.tree(name)?.slot;
        let old = {
            let mut p = slot.write().unwrap_or_else(|e| e.into_inner());
            let generation = p.generation + 1;
            std::mem::replace(
                &mut *p,
                Physical {
                    name: new_name,
                    tree: new_tree,
                    generation,
                    readers: Arc::default(),
                },
            )
        };
        // A read pinned on the old tree (a journey's record, then its timeline chunks) must
        // not see it emptied under it.
        let waited = std::time::Instant::now();
        while Arc::strong_count(&old.readers) > 1 && waited.elapsed() < PINNED_READ_GRACE {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        self.db.drop_tree(old.name.as_bytes())?;
        Ok(())
    }

    fn drop_orphan_shadows(&self, name: &str) -> Result<(), StoreError> {
        let current = self.current_physical(name)?;
        let prefix = format!("{name}@");
        for n in self.db.tree_names() {
            if let Ok(n) = std::str::from_utf8(&n) {
                if n.starts_with(&prefix) && n != current {
                    self.db.drop_tree(n)?;
                }
            }
        }
        Ok(())
    }

    /// Drops a tree and everything in it.
    pub fn drop_tree(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.drop_tree(name)?)
    }

    /// The names of all physical projection trees (a rebuilt projection's is `<name>@<n>`).
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .filter(|n| n != "__sled__default" && n != META_TREE)
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

    /// This store's id: 12 lowercase hex digits (48 random bits), chosen the first time it
    /// is asked for and kept in the store (flushed before it is returned). It names what
    /// belongs to this store outside it, such as a projection's NATS consumers: the same
    /// across restarts, different for every store. A store found on another host or in
    /// another directory than where its id was chosen (a copy, or a move) gets a new one,
    /// so that a copy never shares the original's consumers.
    pub async fn instance_id(&self) -> Result<String, StoreError> {
        let here = self.location.as_bytes();
        if let (Some(id), Some(at)) = (self.meta.get(INSTANCE_KEY)?, self.meta.get(LOCATION_KEY)?) {
            if at.as_ref() == here {
                return std::str::from_utf8(&id)
                    .ok()
                    .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_string)
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: META_TREE.into(),
                        detail: "the store's id is not 12 hex digits".into(),
                    });
            }
        }
        // A version 7 UUID ends in 62 random bits; its last 12 hex digits are random.
        let uuid = uuid::Uuid::now_v7().simple().to_string();
        let id = uuid[uuid.len() - 12..].to_string();
        let mut batch = sled::Batch::default();
        batch.insert(INSTANCE_KEY, id.as_bytes());
        batch.insert(LOCATION_KEY, here);
        self.meta.apply_batch(batch)?;
        self.flush().await?;
        Ok(id)
    }
}

/// A handle on one projection's current tree.
#[derive(Clone)]
pub struct Tree {
    name: String,
    slot: Slot,
    writer: Writer,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("name", &self.name).finish()
    }
}

impl Tree {
    /// The projection's name (a shadow's is its physical name, `<name>@<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle on the physical tree current now that does not follow a later
    /// [`Store::promote`], for a read made of several lookups (a journey's record, then its
    /// timeline chunks; a worklist's index, then its rows): all of them see one tree, and a
    /// promote keeps the tree it replaces until such handles are dropped. Only for reads.
    pub fn pinned(&self) -> Tree {
        Tree {
            name: self.name.clone(),
            slot: Arc::new(RwLock::new(read(&self.slot).clone())),
            writer: Writer::default(),
        }
    }

    /// The physical sled tree currently behind this handle.
    pub fn physical_name(&self) -> String {
        read(&self.slot).name.clone()
    }

    /// How many times the tree behind this handle was replaced by a rebuild.
    pub fn generation(&self) -> u64 {
        read(&self.slot).generation
    }

    fn current(&self) -> sled::Tree {
        read(&self.slot).tree.clone()
    }

    /// The stream position of the last committed batch (0 when none).
    pub fn position(&self) -> Result<u64, StoreError> {
        match self.current().get(POSITION_KEY)? {
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

    /// The code version of the projection that wrote this tree (`None` when never set).
    pub fn version(&self) -> Result<Option<u32>, StoreError> {
        Ok(self
            .current()
            .get(VERSION_KEY)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes))
    }

    /// Records the code version of the projection writing this tree, durably.
    pub async fn set_version(&self, version: u32) -> Result<(), StoreError> {
        let t = self.current();
        t.insert(VERSION_KEY, &version.to_be_bytes())?;
        t.flush_async().await?;
        Ok(())
    }

    /// Reads a value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.current().get(key)?.map(|v| v.to_vec()))
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.current().scan_prefix(prefix).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// Entries with keys in `start..end`, in key order.
    pub fn scan_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.current().range(start..end).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// The first entry with a key in `start..end`, handed to `f` where it lies in the store's
    /// cache rather than copied out (a journey read looks up one timeline chunk per event).
    pub fn first_in_with<R>(
        &self,
        start: &[u8],
        end: &[u8],
        f: impl FnOnce(&[u8], &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        Ok(self
            .current()
            .range(start..end)
            .next()
            .transpose()?
            .map(|(k, v)| f(&k, &v)))
    }

    /// Starts a transaction over this tree (over the physical tree current now), for a
    /// writer that is alone on the tree (a rebuild's shadow, a benchmark). Where two writers
    /// share a tree, both use [`Tree::begin_exclusive`].
    pub fn begin(&self) -> Tx<'_> {
        self.begin_holding(None)
    }

    /// Starts a transaction once no other exclusive transaction on this projection's tree
    /// is open, and keeps the others out until this one is applied, committed or dropped.
    /// Writers that read what they then rewrite (the projection's batches, an erasure) use
    /// it, so neither rewrites a value from what it read before the other's change landed
    /// (a timeline chunk two of them both rewrite, say). Waiters are served in turn.
    pub async fn begin_exclusive(&self) -> Tx<'_> {
        let guard = self.writer.clone().lock_owned().await;
        self.begin_holding(Some(guard))
    }

    fn begin_holding(&self, exclusive: Option<tokio::sync::OwnedMutexGuard<()>>) -> Tx<'_> {
        let (tree, generation) = {
            let p = read(&self.slot);
            (p.tree.clone(), p.generation)
        };
        Tx {
            name: &self.name,
            tree,
            generation,
            writes: BTreeMap::new(),
            _exclusive: exclusive,
        }
    }

    /// Applies `tx`'s writes and sets the position to `position` atomically, then flushes.
    /// Fails with [`StoreError::Swapped`] when a rebuild replaced the tree since `begin`.
    pub async fn commit(&self, tx: Tx<'_>, position: u64) -> Result<(), StoreError> {
        self.commit_at(tx, Some(position)).await
    }

    /// Applies `tx`'s writes and sets the position to `position` atomically, in memory:
    /// readers and later transactions see them at once, and they are durable after the
    /// next [`Tree::flush`] (a crash before it loses them and the position together, never
    /// one without the other). Fails with [`StoreError::Swapped`] when a rebuild replaced
    /// the tree since `begin`.
    pub fn apply(&self, tx: Tx<'_>, position: u64) -> Result<(), StoreError> {
        self.apply_at(tx, Some(position))
    }

    /// Commits `tx`'s writes (like [`Tree::commit`]) without touching the position: for
    /// changes made beside the projection, such as an erasure, which must neither move the
    /// projection on nor set it back when a batch of the projection commits meanwhile.
    pub async fn commit_keeping_position(&self, tx: Tx<'_>) -> Result<(), StoreError> {
        self.commit_at(tx, None).await
    }

    /// [`Tree::apply_at`], then a flush of the tree the writes went to.
    async fn commit_at(&self, tx: Tx<'_>, position: Option<u64>) -> Result<(), StoreError> {
        let tree = tx.tree.clone();
        self.apply_at(tx, position)?;
        tree.flush_async().await?;
        Ok(())
    }

    /// `tx`'s writes, and the position when given, in one sled batch.
    fn apply_at(&self, tx: Tx<'_>, position: Option<u64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in tx.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        if let Some(position) = position {
            batch.insert(POSITION_KEY, &position.to_be_bytes());
        }
        // Held while applying, so a promote cannot slip between the check and the write.
        let p = read(&self.slot);
        if p.generation != tx.generation {
            return Err(StoreError::Swapped(self.name.clone()));
        }
        tx.tree.apply_batch(batch)?;
        // An exclusive transaction lets the next writer in once its writes are visible.
        drop(tx._exclusive);
        Ok(())
    }

    /// Makes everything applied to the store so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.current().flush_async().await?;
        Ok(())
    }

    /// Removes every entry, including the position.
    pub fn clear(&self) -> Result<(), StoreError> {
        Ok(self.current().clear()?)
    }

    /// Number of entries (excluding the position and version).
    pub fn len(&self) -> usize {
        let t = self.current();
        t.len()
            .saturating_sub(usize::from(t.contains_key(POSITION_KEY).unwrap_or(false)))
            .saturating_sub(usize::from(t.contains_key(VERSION_KEY).unwrap_or(false)))
    }

    /// True when the tree holds no data entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Pending reads-through and writes of one batch.
pub struct Tx<'a> {
    name: &'a str,
    tree: sled::Tree,
    generation: u64,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Held by an exclusive transaction until it is applied or dropped.
    _exclusive: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx<'_> {
    /// Reads a value, seeing this transaction's own writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    /// True when this transaction wrote or removed `key`.
    pub fn has_write(&self, key: &[u8]) -> bool {
        self.writes.contains_key(key)
    }

    /// The first entry with a key in `start..end`, seeing this transaction's own writes
    /// (a key it removed is skipped, one it wrote is seen with its new value).
    pub fn first_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        let mut stored = self.tree.range(start..end);
        let mut pending = self
            .writes
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .peekable();
        let mut next_stored = stored.next().transpose()?;
        loop {
            let from_tx = pending.peek().map(|(k, _)| k.as_slice());
            match (&next_stored, from_tx) {
                (None, None) => return Ok(None),
                (Some((k, v)), p) if p.is_none_or(|p| k.as_ref() < p) => {
                    return Ok(Some((k.to_vec(), v.to_vec())));
                }
                (s, Some(p)) => {
                    if s.as_ref().is_some_and(|(k, _)| k.as_ref() == p) {
                        next_stored = stored.next().transpose()?;
                    }
                    let Some((k, v)) = pending.next() else {
                        unreachable!("peeked")
                    };
                    if let Some(v) = v {
                        return Ok(Some((k.clone(), v.clone())));
                    }
                }
                (Some(_), None) => unreachable!("matched above"),
            }
        }
    }

    /// The projection the transaction writes to.
    pub fn tree_name(&self) -> &str {
        self.name
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

    /// Opens a store just closed: sled's background flusher can hold the directory's lock
    /// for a moment after the last handle is dropped.
    fn reopen(path: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(path) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
    }

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
    fn a_commit_keeping_the_position_neither_moves_it_nor_sets_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("journeys").unwrap();
        let mut first = tree.begin();
        first.put(b"a".to_vec(), b"1".to_vec());
        block_on(tree.commit(first, 10)).unwrap();
        // An erasure begins and reads at position 10 …
        let mut erasure = tree.begin();
        erasure.remove(b"a".to_vec());
        // … a batch of the projection commits meanwhile …
        let mut batch = tree.begin();
        batch.put(b"b".to_vec(), b"2".to_vec());
        block_on(tree.commit(batch, 20)).unwrap();
        // … and the erasure's removal lands without setting the position back to 10.
        block_on(tree.commit_keeping_position(erasure)).unwrap();
        assert_eq!(tree.position().unwrap(), 20);
        assert_eq!(tree.get(b"a").unwrap(), None);
        assert_eq!(tree.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        // Durable: a reopened store sees the same.
        drop((tree, store));
        let store = reopen(dir.path());
        let tree = store.tree("journeys").unwrap();
        assert_eq!(tree.position().unwrap(), 20);
        assert_eq!(tree.get(b"a").unwrap(), None);
    }

    #[test]
    fn an_exclusive_transaction_waits_for_the_one_before_it_and_reads_what_it_wrote() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("journeys").unwrap();
        let mut seed = tree.begin();
        seed.put(b"chunk".to_vec(), b"a,b".to_vec());
        block_on(tree.commit(seed, 1)).unwrap();
        // A batch of the projection reads a chunk it will rewrite …
        let mut batch = block_on(tree.begin_exclusive());
        let read = batch.get(b"chunk").unwrap().unwrap();
        // … an erasure, through another handle of the same tree, must wait for it …
        let other = store.tree("journeys").unwrap();
        let mut erasure = std::pin::pin!(other.begin_exclusive());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(erasure.as_mut().poll(&mut cx).is_pending());
        // … a rebuild's shadow is another tree, with a lock of its own …
        let shadow = store.shadow("journeys").unwrap();
        drop(block_on(shadow.begin_exclusive()));
        assert!(erasure.as_mut().poll(&mut cx).is_pending());
        // … until the batch's rewrite is applied; then it reads the rewritten chunk.
        batch.put(b"chunk".to_vec(), [&read[..], b",c"].concat());
        tree.apply(batch, 2).unwrap();
        let Poll::Ready(mut erasure) = erasure.as_mut().poll(&mut cx) else {
            panic!("the erasure still waits after the batch was applied");
        };
        let chunk = erasure.get(b"chunk").unwrap().unwrap();
        assert_eq!(chunk, b"a,b,c");
        erasure.put(b"chunk".to_vec(), b"b,c".to_vec());
        // A transaction dropped without committing lets the next one in too.
        let mut next = std::pin::pin!(tree.begin_exclusive());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        block_on(other.commit_keeping_position(erasure)).unwrap();
        let Poll::Ready(next) = next.as_mut().poll(&mut cx) else {
            panic!("the next batch still waits after the erasure committed");
        };
        let mut after = std::pin::pin!(tree.begin_exclusive());
        assert!(after.as_mut().poll(&mut cx).is_pending());
        drop(next);
        assert!(after.as_mut().poll(&mut cx).is_ready());
        assert_eq!(tree.get(b"chunk").unwrap().as_deref(), Some(&b"b,c"[..]));
        assert_eq!(tree.position().unwrap(), 2);
    }

    #[test]
    fn a_store_keeps_its_id_across_reopening_and_a_copy_or_another_store_has_another() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path()).unwrap();
            let id = block_on(store.instance_id()).unwrap();
            assert_eq!(id.len(), 12);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(block_on(store.instance_id()).unwrap(), id, "asked twice");
            id
        };
        let store = reopen(dir.path());
        assert_eq!(
            block_on(store.instance_id()).unwrap(),
            id,
            "after reopening"
        );
        let other = tempfile::tempdir().unwrap();
        let other = Store::open(other.path()).unwrap();
        assert_ne!(block_on(other.instance_id()).unwrap(), id);
        drop(store);

        // a copy of the store's directory is another store
        let copy = tempfile::tempdir().unwrap();
        fn copy_dir(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                let target = to.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    copy_dir(&e.path(), &target);
                } else {
                    std::fs::copy(e.path(), target).unwrap();
                }
            }
        }
        // (once sled has let go of the original)
        drop(reopen(dir.path()));
        copy_dir(dir.path(), copy.path());
        let copied = reopen(copy.path());
        let copy_id = block_on(copied.instance_id()).unwrap();
        assert_ne!(copy_id, id, "a copy gets an id of its own");
        assert_eq!(
            block_on(copied.instance_id()).unwrap(),
            copy_id,
            "and keeps it"
        );
        assert_eq!(
            block_on(reopen(dir.path()).instance_id()).unwrap(),
            id,
            "the original keeps its id"
        );
    }

    #[test]
    fn first_in_sees_the_transactions_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        let mut tx = tree.begin();
        for k in ["t/2", "t/4", "t/6"] {
            tx.put(k.into(), k.as_bytes().to_vec());
        }
        tree.apply(tx, 1).unwrap();
        let first = |tx: &Tx<'_>, start: &str| {
            tx.first_in(start.as_bytes(), b"t0")
                .unwrap()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        };
        let mut tx = tree.begin();
        assert_eq!(first(&tx, "t/1"), Some(("t/2".into(), "t/2".into())));
        assert_eq!(first(&tx, "t/4"), Some(("t/4".into(), "t/4".into())));
        assert_eq!(first(&tx, "t/7"), None);
        assert_eq!(tx.first_in(b"t/4", b"t/4").unwrap(), None, "an empty range");
        // A stored key removed is skipped, a new one before it is seen, and a rewritten
        // one is seen with its new value.
        tx.remove(b"t/2".to_vec());
        assert_eq!(first(&tx, "t/1"), Some(("t/4".into(), "t/4".into())));
        tx.put(b"t/3".to_vec(), b"new".to_vec());
        assert_eq!(first(&tx, "t/1"), Some(("t/3".into(), "new".into())));
        tx.put(b"t/4".to_vec(), b"four".to_vec());
        tx.remove(b"t/3".to_vec());
        assert_eq!(first(&tx, "t/1"), Some(("t/4".into(), "four".into())));
        tx.remove(b"t/4".to_vec());
        tx.remove(b"t/6".to_vec());
        assert_eq!(first(&tx, "t/1"), None);
        tx.put(b"t/9".to_vec(), b"nine".to_vec());
        assert_eq!(first(&tx, "t/1"), Some(("t/9".into(), "nine".into())));
        assert_eq!(first(&tx, "t/91"), None);
        // The tree itself is unchanged until the transaction is applied.
        assert_eq!(tree.get(b"t/2").unwrap(), Some(b"t/2".to_vec()));
    }

    #[test]
    fn an_existing_store_keeps_the_compression_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_with(dir.path(), DEFAULT_CACHE_BYTES, false).unwrap();
            assert!(!store.compressed());
            let tree = store.tree("journey").unwrap();
            let mut tx = tree.begin();
            tx.put(b"p/a".to_vec(), b"1".to_vec());
            block_on(tree.commit(tx, 1)).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open_with(dir.path(), DEFAULT_CACHE_BYTES, true) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(
            !store.compressed(),
            "created without compression, it stays so"
        );
        assert_eq!(
            store.tree("journey").unwrap().get(b"p/a").unwrap(),
            Some(b"1".to_vec())
        );
        let other = tempfile::tempdir().unwrap();
        let new = Store::open_with(other.path(), DEFAULT_CACHE_BYTES, true).unwrap();
        assert!(new.compressed(), "a new store takes the setting");
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
        let store = reopen(dir.path());
        let tree = store.tree("journey").unwrap();
        assert_eq!(tree.position().unwrap(), 42);
        assert_eq!(tree.get(b"p/a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(tree.get(b"p/b").unwrap(), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.scan_prefix(b"p/").count(), 1);
    }

    #[test]
    fn a_promoted_shadow_replaces_the_tree_for_every_handle_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let live = store.tree("journey").unwrap();
            let reader = store.tree("journey").unwrap();
            let mut tx = live.begin();
            tx.put(b"p/a".to_vec(), b"old".to_vec());
            block_on(live.commit(tx, 5)).unwrap();
            let stale = live.begin();

            let shadow = store.shadow("journey").unwrap();
            assert_eq!(shadow.name(), "journey@1");
            let mut tx = shadow.begin();
            tx.put(b"p/a".to_vec(), b"new".to_vec());
            block_on(shadow.commit(tx, 7)).unwrap();
            block_on(shadow.set_version(3)).unwrap();
            assert_eq!(reader.get(b"p/a").unwrap(), Some(b"old".to_vec()));

            block_on(store.promote("journey", &shadow)).unwrap();
            assert_eq!(reader.get(b"p/a").unwrap(), Some(b"new".to_vec()));
            assert_eq!(reader.position().unwrap(), 7);
            assert_eq!(reader.version().unwrap(), Some(3));
            assert_eq!(live.generation(), 1);
            assert!(matches!(
                block_on(live.commit(stale, 6)),
                Err(StoreError::Swapped(_))
            ));
            assert_eq!(store.tree_names(), vec!["journey@1".to_string()]);
            // an interrupted rebuild's shadow is dropped by the next one
            let _orphan = store.shadow("journey").unwrap();
            let next = store.shadow("journey").unwrap();
            assert_eq!(next.name(), "journey@3");
            let mut names = store.tree_names();
            names.sort();
            assert_eq!(
                names,
                vec!["journey@1".to_string(), "journey@3".to_string()]
            );
        }
        let store = reopen(dir.path());
        let tree = store.tree("journey").unwrap();
        assert_eq!(tree.physical_name(), "journey@1");
        assert_eq!(tree.get(b"p/a").unwrap(), Some(b"new".to_vec()));
        assert_eq!(tree.len(), 1);
    }

    #[tokio::test]
    async fn a_pinned_read_keeps_the_tree_it_began_on_until_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let live = store.tree("journey").unwrap();
        let mut tx = live.begin();
        tx.put(b"p/a".to_vec(), b"old".to_vec());
        tx.put(b"t/a".to_vec(), b"old chunk".to_vec());
        live.commit(tx, 5).await.unwrap();
        let shadow = store.shadow("journey").unwrap();
        let mut tx = shadow.begin();
        tx.put(b"p/a".to_vec(), b"new".to_vec());
        tx.put(b"t/a".to_vec(), b"new chunk".to_vec());
        shadow.commit(tx, 7).await.unwrap();

        // a read has looked up the record on the old tree when the rebuild swaps it
        let pinned = live.pinned();
        assert_eq!(pinned.get(b"p/a").unwrap(), Some(b"old".to_vec()));
        let promote = tokio::spawn({
            let store = store.clone();
            async move { store.promote("journey", &shadow).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // new reads see the new tree; the pinned one still reads the old tree, whole
        assert_eq!(live.get(b"p/a").unwrap(), Some(b"new".to_vec()));
        assert_eq!(pinned.get(b"t/a").unwrap(), Some(b"old chunk".to_vec()));
        assert_eq!(pinned.position().unwrap(), 5);
        assert!(!promote.is_finished(), "the old tree is kept while read");
        drop(pinned);
        tokio::time::timeout(std::time::Duration::from_secs(5), promote)
            .await
            .expect("the promote finishes once the read is done")
            .unwrap()
            .unwrap();
        assert_eq!(store.tree_names(), vec!["journey@1".to_string()]);
        assert_eq!(
            live.pinned().get(b"t/a").unwrap(),
            Some(b"new chunk".to_vec())
        );
    }
}
