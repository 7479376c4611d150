//! The on-disk image cache (SPEC §3.4): bytes in files under `dir/<first two hex>/<hash>`,
//! metadata in sled, total size bounded with least-recently-used eviction.
//!
//! Crash safety rests on two orderings: a file is complete and in place before its index entry
//! is written, and an index entry is removed and flushed before its file is deleted. So the
//! index never points at a partial file, and `open` cleans up what a crash can leave behind
//! (temp files, files without an entry, entries whose file is gone).
//!
//! Accesses (last_access, hits) are kept in memory and written behind by `flush_accesses`, so
//! serving an image costs no sled write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, StoreResult};
use crate::time::now_unix;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    Prompt,
    Generation,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageMeta {
    /// SHA-256, 64 lowercase hex characters.
    pub hash: String,
    pub content_type: String,
    pub size: u64,
    pub created: i64,
    pub last_access: i64,
    pub hits: u64,
    pub revised_prompt: Option<String>,
    pub hosted_url: Option<String>,
    /// The user who generated it (stored generations).
    pub owner: Option<String>,
    pub key_id: Option<String>,
    pub source: ImageSource,
}

impl ImageMeta {
    /// The extension of the public URL `/images/{hash}.{ext}`.
    pub fn ext(&self) -> &'static str {
        let mime = self.content_type.split(';').next().unwrap_or_default();
        match mime.trim().to_ascii_lowercase().as_str() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            _ => "bin",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Insertion {
    /// False when the image was already stored.
    pub inserted: bool,
    /// Hashes evicted to make room, least recently used first. Ends with the inserted image
    /// itself when it alone exceeds the bound.
    pub evicted: Vec<String>,
}

struct Entry {
    meta: ImageMeta,
    seq: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Access sequence number -> hash; the first is the least recently used.
    lru: BTreeMap<u64, String>,
    next_seq: u64,
    total: u64,
    /// Read since the last `flush_accesses`.
    dirty: HashSet<String>,
    /// Hashes whose file is being written or deleted; never in `entries`. Nobody else touches
    /// such a file until its hash leaves this set, which is what stops an eviction from
    /// deleting a file that a concurrent insert of the same image has just put in place.
    busy: HashSet<String>,
}

impl State {
    fn add(&mut self, meta: ImageMeta) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.total += meta.size;
        self.lru.insert(seq, meta.hash.clone());
        self.entries.insert(meta.hash.clone(), Entry { meta, seq });
    }

    fn touch(&mut self, hash: &str) -> Option<ImageMeta> {
        let entry = self.entries.get_mut(hash)?;
        self.lru.remove(&entry.seq);
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.lru.insert(entry.seq, hash.to_string());
        entry.meta.last_access = now_unix();
        entry.meta.hits += 1;
        self.dirty.insert(hash.to_string());
        Some(entry.meta.clone())
    }

    fn take(&mut self, hash: &str) -> Option<ImageMeta> {
        let entry = self.entries.remove(hash)?;
        self.lru.remove(&entry.seq);
        self.total -= entry.meta.size;
        self.dirty.remove(hash);
        Some(entry.meta)
    }
}

pub struct ImageStore {
    /// hash -> JSON `ImageMeta`
    images: sled::Tree,
    /// owner ++ 0x00 ++ created (i64 big-endian) ++ hash -> empty, so an owner's images are
    /// one prefix scan, newest last.
    owners: sled::Tree,
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Signalled whenever hashes leave `State::busy`.
    idle: Condvar,
    tmp_seq: AtomicU64,
}

fn io_err(path: &Path, e: io::Error) -> StoreError {
    StoreError(format!("{}: {e}", path.display()))
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Also keeps a corrupt index from naming a path outside the shard directories.
fn valid_hash(hash: &str) -> bool {
    hash.len() == 64 && is_hex(hash)
}

fn owner_key(owner: &str, created: i64, hash: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 9 + hash.len());
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.extend_from_slice(&created.to_be_bytes());
    key.extend_from_slice(hash.as_bytes());
    key
}

/// Makes a rename or a new directory entry durable.
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

fn list(dir: &Path) -> StoreResult<Vec<fs::DirEntry>> {
    let entries = fs::read_dir(dir).and_then(|items| items.collect::<io::Result<Vec<_>>>());
    entries.map_err(|e| io_err(dir, e))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("cannot delete {}: {e}", path.display());
        }
    }
}

impl ImageStore {
    /// Opens the trees `images` and `image_owners` in `db` and the files below `dir`, repairs
    /// what a crash left behind, and evicts down to `max_bytes` (which may have shrunk).
    pub fn open(db: &sled::Db, dir: &Path, max_bytes: u64) -> StoreResult<ImageStore> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        for item in list(&tmp)? {
            let path = item.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                log::warn!("cannot delete {}: {e}", path.display());
            }
        }
        let store = ImageStore {
            images: db.open_tree("images")?,
            owners: db.open_tree("image_owners")?,
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            tmp_seq: AtomicU64::new(0),
        };

        let mut metas = Vec::new();
        for item in store.images.iter() {
            let (key, value) = item?;
            let meta = match serde_json::from_slice::<ImageMeta>(&value) {
                Ok(meta) if valid_hash(&meta.hash) && *key == *meta.hash.as_bytes() => meta,
                _ => {
                    log::warn!("corrupt image index entry {key:?} dropped");
                    store.images.remove(key)?;
                    continue;
                }
            };
            match fs::metadata(store.path(&meta.hash)) {
                Ok(m) if m.is_file() && m.len() == meta.size => metas.push(meta),
                found => {
                    let why = match found {
                        Ok(m) => format!("{} bytes, expected {}", m.len(), meta.size),
                        Err(e) => e.to_string(),
                    };
                    log::warn!(
                        "image {}: file missing or changed ({why}), entry dropped",
                        meta.hash
                    );
                    store.unindex(&meta)?;
                }
            }
        }
        let known: HashSet<&str> = metas.iter().map(|m| m.hash.as_str()).collect();
        store.delete_orphans(&known)?;
        // Entries dropped above without a readable meta may have left owner entries behind.
        for item in store.owners.iter() {
            let (key, _) = item?;
            let hash = key.get(key.len().saturating_sub(64)..).unwrap_or_default();
            if !known.contains(String::from_utf8_lossy(hash).as_ref()) {
                store.owners.remove(key)?;
            }
        }

        metas.sort_by(|a, b| {
            (a.last_access, a.created, &a.hash).cmp(&(b.last_access, b.created, &b.hash))
        });
        let victims = {
            let mut st = store.state();
            for meta in metas {
                st.add(meta);
            }
            store.pick_victims(&mut st)
        };
        store.finish_removal(&victims)?;
        store.images.flush()?;
        Ok(store)
    }

    /// Deletes files in the shard directories that have no index entry: a crash between the
    /// rename and the index write leaves them.
    fn delete_orphans(&self, known: &HashSet<&str>) -> StoreResult<()> {
        for shard in list(&self.dir)? {
            let name = shard.file_name();
            let Some(prefix) = name.to_str().filter(|n| n.len() == 2 && is_hex(n)) else {
                continue;
            };
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for file in list(&shard.path())? {
                let name = file.file_name();
                let indexed = name
                    .to_str()
                    .is_some_and(|n| n.starts_with(prefix) && known.contains(n));
                if !indexed && file.file_type().is_ok_and(|t| t.is_file()) {
                    log::warn!(
                        "deleting image file without index entry: {}",
                        file.path().display()
                    );
                    remove_quietly(&file.path());
                }
            }
        }
        Ok(())
    }

    /// Does not count as an access.
    pub fn get(&self, hash: &str) -> Option<ImageMeta> {
        self.state().entries.get(hash).map(|e| e.meta.clone())
    }

    /// Reads the image and records an access (written behind by `flush_accesses`). An entry
    /// whose file vanished or changed length is dropped and answered as unknown.
    pub fn read(&self, hash: &str) -> StoreResult<Option<(ImageMeta, Bytes)>> {
        // A second round only happens if the image was evicted and stored again while we read.
        for _ in 0..2 {
            let Some(meta) = self.state().touch(hash) else {
                return Ok(None);
            };
            let path = self.path(hash);
            match fs::read(&path) {
                Ok(data) if data.len() as u64 == meta.size => return Ok(Some((meta, data.into()))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
            if self.drop_if_broken(hash)? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// True if the entry is gone; false if its file is intact after all.
    fn drop_if_broken(&self, hash: &str) -> StoreResult<bool> {
        let mut st = self.state();
        let Some(entry) = st.entries.get(hash) else {
            return Ok(true);
        };
        if fs::metadata(self.path(hash)).is_ok_and(|m| m.len() == entry.meta.size) {
            return Ok(false);
        }
        log::warn!("image {hash}: file missing or changed, entry dropped");
        self.detach(&mut st, hash)?;
        drop(st);
        self.finish_removal(&[hash.to_string()])?;
        Ok(true)
    }

    /// Stores the image durably unless it is already there, then evicts down to the bound.
    /// `meta.size` is set from `bytes`.
    pub fn insert(&self, mut meta: ImageMeta, bytes: &[u8]) -> StoreResult<Insertion> {
        if !valid_hash(&meta.hash) {
            return Err(StoreError(format!("invalid image hash {:?}", meta.hash)));
        }
        meta.size = bytes.len() as u64;
        let hash = meta.hash.clone();
        let mut st = self.state();
        loop {
            if st.touch(&hash).is_some() {
                return Ok(Insertion {
                    inserted: false,
                    evicted: Vec::new(),
                });
            }
            if !st.busy.contains(&hash) {
                break;
            }
            st = self.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.busy.insert(hash.clone());
        drop(st);

        if let Err(e) = self.write_file(&hash, bytes) {
            remove_quietly(&self.path(&hash));
            self.release(&[hash]);
            return Err(e);
        }
        let mut st = self.state();
        // Index writes happen under the lock so sled and memory change together (a write-behind
        // of an older copy of the entry cannot land after a newer one).
        if let Err(e) = self.index(&meta) {
            drop(st);
            let _ = self.unindex(&meta);
            remove_quietly(&self.path(&hash));
            self.release(&[hash]);
            return Err(e);
        }
        st.busy.remove(&hash);
        st.add(meta);
        let victims = self.pick_victims(&mut st);
        drop(st);
        self.idle.notify_all();
        if victims.is_empty() {
            self.images.flush()?;
        } else {
            // Its flush makes the new entry durable too.
            self.finish_removal(&victims)?;
        }
        Ok(Insertion {
            inserted: true,
            evicted: victims,
        })
    }

    fn write_file(&self, hash: &str, bytes: &[u8]) -> StoreResult<()> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join("tmp").join(format!("{hash}.{seq}"));
        let shard = self.dir.join(&hash[..2]);
        let dest = self.path(hash);
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            if !shard.is_dir() {
                fs::create_dir_all(&shard)?;
                sync_dir(&self.dir)?;
            }
            fs::rename(&tmp, &dest)?;
            sync_dir(&shard)
        })();
        if result.is_err() {
            remove_quietly(&tmp);
        }
        result.map_err(|e| io_err(&dest, e))
    }

    pub fn set_hosted_url(&self, hash: &str, url: &str) -> StoreResult<bool> {
        let mut st = self.state();
        let Some(entry) = st.entries.get_mut(hash) else {
            return Ok(false);
        };
        entry.meta.hosted_url = Some(url.to_string());
        self.images
            .insert(hash.as_bytes(), serde_json::to_vec(&entry.meta)?)?;
        drop(st);
        self.images.flush()?;
        Ok(true)
    }

    pub fn remove(&self, hash: &str) -> StoreResult<bool> {
        let mut st = self.state();
        if self.detach(&mut st, hash)?.is_none() {
            return Ok(false);
        }
        drop(st);
        self.finish_removal(&[hash.to_string()])?;
        Ok(true)
    }

    /// Writes the accesses recorded since the last call; returns how many entries it wrote.
    pub fn flush_accesses(&self) -> StoreResult<usize> {
        let mut st = self.state();
        let dirty = std::mem::take(&mut st.dirty);
        let mut batch = sled::Batch::default();
        let mut written = 0;
        for entry in dirty.iter().filter_map(|h| st.entries.get(h)) {
            batch.insert(entry.meta.hash.as_bytes(), serde_json::to_vec(&entry.meta)?);
            written += 1;
        }
        if written == 0 {
            return Ok(0);
        }
        if let Err(e) = self.images.apply_batch(batch) {
            st.dirty.extend(dirty);
            return Err(e.into());
        }
        drop(st);
        self.images.flush()?;
        Ok(written)
    }

    /// The owner's images, newest first.
    pub fn owned_by(&self, owner: &str, limit: usize) -> StoreResult<Vec<ImageMeta>> {
        let mut prefix = owner.as_bytes().to_vec();
        prefix.push(0);
        let mut hashes = Vec::new();
        for item in self.owners.scan_prefix(&prefix).rev() {
            let (key, _) = item?;
            if let Some(hash) = key
                .get(prefix.len() + 8..)
                .and_then(|h| std::str::from_utf8(h).ok())
            {
                hashes.push(hash.to_string());
            }
        }
        let st = self.state();
        Ok(hashes
            .iter()
            .filter_map(|h| st.entries.get(h))
            .filter(|e| e.meta.owner.as_deref() == Some(owner))
            .map(|e| e.meta.clone())
            .take(limit)
            .collect())
    }

    pub fn total_bytes(&self) -> u64 {
        self.state().total
    }

    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state().entries.is_empty()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash.get(..2).unwrap_or("__")).join(hash)
    }

    fn index(&self, meta: &ImageMeta) -> StoreResult<()> {
        self.images
            .insert(meta.hash.as_bytes(), serde_json::to_vec(meta)?)?;
        if let Some(owner) = &meta.owner {
            self.owners
                .insert(owner_key(owner, meta.created, &meta.hash), &[])?;
        }
        Ok(())
    }

    fn unindex(&self, meta: &ImageMeta) -> StoreResult<()> {
        self.images.remove(meta.hash.as_bytes())?;
        if let Some(owner) = &meta.owner {
            self.owners
                .remove(owner_key(owner, meta.created, &meta.hash))?;
        }
        Ok(())
    }

    /// With the lock held: takes the entry out of memory and the index and marks it busy; the
    /// caller then calls `finish_removal`. On an index error the entry stays as it was.
    fn detach(&self, st: &mut State, hash: &str) -> StoreResult<Option<ImageMeta>> {
        let Some(meta) = st.take(hash) else {
            return Ok(None);
        };
        if let Err(e) = self.unindex(&meta) {
            st.add(meta);
            return Err(e);
        }
        st.busy.insert(hash.to_string());
        Ok(Some(meta))
    }

    /// With the lock held: detaches least recently used entries until the total fits.
    fn pick_victims(&self, st: &mut State) -> Vec<String> {
        let mut victims = Vec::new();
        while st.total > self.max_bytes {
            let Some(hash) = st.lru.values().next().cloned() else {
                break;
            };
            match self.detach(st, &hash) {
                Ok(_) => victims.push(hash),
                Err(e) => {
                    log::error!("cannot evict image {hash}: {e}");
                    break;
                }
            }
        }
        victims
    }

    /// Flushes the index removals of detached entries, then deletes their files.
    fn finish_removal(&self, hashes: &[String]) -> StoreResult<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        let flushed = self.images.flush();
        if flushed.is_ok() {
            for hash in hashes {
                remove_quietly(&self.path(hash));
            }
        }
        self.release(hashes);
        flushed?;
        Ok(())
    }

    fn release(&self, hashes: &[String]) {
        let mut st = self.state();
        for hash in hashes {
            st.busy.remove(hash);
        }
        drop(st);
        self.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tollgate-images-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn images(&self) -> PathBuf {
            self.0.join("images")
        }
        /// Opened as the gateway opens its store, retrying while sled's lock is still held:
        /// the flusher thread of a database dropped just before can keep it a moment longer
        /// on a busy machine, and a reopen then failed with `WouldBlock`.
        fn db(&self) -> sled::Db {
            crate::store::Store::open(&self.0, 8, std::time::Duration::from_secs(30))
                .unwrap()
                .db()
                .clone()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn hash_of(data: &[u8]) -> String {
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn meta(data: &[u8], created: i64, owner: Option<&str>) -> ImageMeta {
        ImageMeta {
            hash: hash_of(data),
            content_type: "image/png".into(),
            size: data.len() as u64,
            created,
            last_access: created,
            hits: 0,
            revised_prompt: None,
            hosted_url: None,
            owner: owner.map(str::to_string),
            key_id: None,
            source: ImageSource::Prompt,
        }
    }

    fn image(tag: &str, len: usize) -> Vec<u8> {
        let mut data = tag.as_bytes().to_vec();
        data.resize(len, b'.');
        data
    }

    /// Sizes of the files in the shard directories, by name.
    fn files(dir: &Path) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for shard in fs::read_dir(dir).unwrap().map(Result::unwrap) {
            if shard.file_name() != "tmp" && shard.path().is_dir() {
                for f in fs::read_dir(shard.path()).unwrap().map(Result::unwrap) {
                    out.insert(
                        f.file_name().into_string().unwrap(),
                        f.metadata().unwrap().len(),
                    );
                }
            }
        }
        out
    }

    #[test]
    fn insert_read_round_trip_and_duplicate() {
        let tmp = TempDir::new("roundtrip");
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = ImageStore::open(&db, &tmp.images(), 1 << 20).unwrap();
        assert!(store.is_empty());
        let data = image("a", 100);
        let m = meta(&data, 10, None);
        let ins = store.insert(m.clone(), &data).unwrap();
        assert!(ins.inserted && ins.evicted.is_empty());
        assert_eq!(store.get(&m.hash), Some(m.clone()));
        assert_eq!((store.len(), store.total_bytes()), (1, 100));
        assert_eq!(m.ext(), "png");

        let (read, bytes) = store.read(&m.hash).unwrap().unwrap();
        assert_eq!(&bytes[..], &data[..]);
        assert_eq!(read.hits, 1);
        assert!(read.last_access >= now_unix() - 5);
        assert_eq!(store.read(&hash_of(b"unknown")).unwrap(), None);

        // Same hash: nothing is written (the different bytes would show), an access is counted.
        let ins = store.insert(m.clone(), b"other bytes").unwrap();
        assert!(!ins.inserted && ins.evicted.is_empty());
        assert_eq!(store.get(&m.hash).unwrap().hits, 2);
        assert_eq!(&store.read(&m.hash).unwrap().unwrap().1[..], &data[..]);
        assert_eq!((store.len(), store.total_bytes()), (1, 100));
        assert_eq!(files(&tmp.images()), HashMap::from([(m.hash.clone(), 100)]));
        let bad = ImageMeta {
            hash: "../x".into(),
            ..m
        };
        assert!(store.insert(bad, &data).is_err());
    }

    #[test]
    fn ext_by_content_type() {
        let mut m = meta(b"x", 0, None);
        for (ct, ext) in [
            ("image/jpeg", "jpg"),
            ("image/webp", "webp"),
            ("IMAGE/GIF", "gif"),
            ("text/plain", "bin"),
        ] {
            m.content_type = ct.into();
            assert_eq!(m.ext(), ext);
        }
    }

    #[test]
    fn lru_eviction_evicts_least_recently_read() {
        let tmp = TempDir::new("lru");
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = ImageStore::open(&db, &tmp.images(), 300).unwrap();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|t| image(t, 100));
        for (i, data) in [&a, &b, &c].into_iter().enumerate() {
            store.insert(meta(data, i as i64, None), data).unwrap();
        }
        store.read(&hash_of(&a)).unwrap().unwrap();
        let ins = store.insert(meta(&d, 3, None), &d).unwrap();
        assert_eq!(ins.evicted, vec![hash_of(&b)]);
        assert_eq!(store.total_bytes(), 300);
        assert_eq!(store.read(&hash_of(&b)).unwrap(), None);
        assert!(!files(&tmp.images()).contains_key(&hash_of(&b)));

        // Alone bigger than the bound: everything goes, the new image last.
        let big = image("big", 400);
        let ins = store.insert(meta(&big, 4, None), &big).unwrap();
        assert!(ins.inserted);
        let expected: Vec<String> = [&c, &a, &d, &big].iter().map(|x| hash_of(x)).collect();
        assert_eq!(ins.evicted, expected);
        assert_eq!((store.len(), store.total_bytes()), (0, 0));
        assert!(files(&tmp.images()).is_empty());
        assert_eq!(db.open_tree("images").unwrap().len(), 0);
    }

    #[test]
    fn survives_reopen_and_shrunk_bound_evicts_by_persisted_access() {
        let tmp = TempDir::new("reopen");
        let [a, b, c] = ["a", "b", "c"].map(|t| image(t, 100));
        let (ha, hb, hc) = (hash_of(&a), hash_of(&b), hash_of(&c));
        {
            let db = tmp.db();
            let store = ImageStore::open(&db, &tmp.images(), 1000).unwrap();
            for (i, data) in [&a, &b, &c].into_iter().enumerate() {
                store.insert(meta(data, i as i64 + 1, None), data).unwrap();
            }
            store.read(&ha).unwrap().unwrap();
            assert_eq!(store.flush_accesses().unwrap(), 1);
            assert_eq!(store.flush_accesses().unwrap(), 0);
            assert!(store
                .set_hosted_url(&hb, "https://i.example/b.png")
                .unwrap());
            assert!(!store.set_hosted_url(&hash_of(b"nope"), "x").unwrap());
        }
        {
            let db = tmp.db();
            let store = ImageStore::open(&db, &tmp.images(), 1000).unwrap();
            assert_eq!((store.len(), store.total_bytes()), (3, 300));
            assert_eq!(store.get(&ha).unwrap().hits, 1);
            assert_eq!(
                store.get(&hb).unwrap().hosted_url.as_deref(),
                Some("https://i.example/b.png")
            );
            assert_eq!(&store.read(&hc).unwrap().unwrap().1[..], &c[..]);
        }
        // c's read was never flushed: by persisted last_access b (2) < c (3) < a (now).
        let db = tmp.db();
        let store = ImageStore::open(&db, &tmp.images(), 200).unwrap();
        assert_eq!(store.get(&hb), None);
        assert!(store.get(&ha).is_some() && store.get(&hc).is_some());
        assert_eq!(store.total_bytes(), 200);
        let on_disk = files(&tmp.images());
        assert_eq!(on_disk.len(), 2);
        assert!(!on_disk.contains_key(&hb));
        assert_eq!(db.open_tree("images").unwrap().len(), 2);
    }

    #[test]
    fn open_drops_broken_entries_orphans_and_temp_files() {
        let tmp = TempDir::new("broken");
        let [a, b, c, orphan] = ["a", "b", "c", "orphan"].map(|t| image(t, 100));
        let (ha, hb, hc, ho) = (hash_of(&a), hash_of(&b), hash_of(&c), hash_of(&orphan));
        {
            let db = tmp.db();
            let store = ImageStore::open(&db, &tmp.images(), 1000).unwrap();
            for data in [&a, &b, &c] {
                store.insert(meta(data, 1, Some("alice")), data).unwrap();
            }
        }
        let dir = tmp.images();
        fs::remove_file(dir.join(&ha[..2]).join(&ha)).unwrap();
        fs::write(dir.join(&hb[..2]).join(&hb), &b[..50]).unwrap();
        fs::create_dir_all(dir.join(&ho[..2])).unwrap();
        fs::write(dir.join(&ho[..2]).join(&ho), &orphan).unwrap();
        fs::write(dir.join("tmp").join(format!("{ho}.7")), b"partial").unwrap();

        let db = tmp.db();
        let store = ImageStore::open(&db, &dir, 1000).unwrap();
        assert_eq!((store.len(), store.total_bytes()), (1, 100));
        for h in [&ha, &hb] {
            assert_eq!(store.get(h), None);
            assert_eq!(store.read(h).unwrap(), None);
        }
        assert_eq!(files(&dir), HashMap::from([(hc.clone(), 100)]));
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert_eq!(db.open_tree("images").unwrap().len(), 1);
        assert_eq!(db.open_tree("image_owners").unwrap().len(), 1);

        // Truncated while running: dropped at read.
        fs::write(dir.join(&hc[..2]).join(&hc), b"short").unwrap();
        assert_eq!(store.read(&hc).unwrap(), None);
        assert!(store.is_empty() && store.total_bytes() == 0);
        assert!(files(&dir).is_empty());
        assert_eq!(db.open_tree("images").unwrap().len(), 0);
        assert!(store.owned_by("alice", 10).unwrap().is_empty());
    }

    #[test]
    fn remove_and_owned_by() {
        let tmp = TempDir::new("owners");
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = ImageStore::open(&db, &tmp.images(), 1 << 20).unwrap();
        let mut alice = Vec::new();
        for created in [10, 30, 20] {
            let data = image(&format!("alice{created}"), 50);
            store
                .insert(meta(&data, created, Some("alice")), &data)
                .unwrap();
            alice.push(hash_of(&data));
        }
        for (tag, owner) in [
            ("bob", Some("bob")),
            ("anon", None),
            ("alicex", Some("alice\u{1}")),
        ] {
            let data = image(tag, 50);
            store.insert(meta(&data, 99, owner), &data).unwrap();
        }
        let created = |v: Vec<ImageMeta>| v.iter().map(|m| m.created).collect::<Vec<_>>();
        assert_eq!(
            created(store.owned_by("alice", 10).unwrap()),
            vec![30, 20, 10]
        );
        assert_eq!(created(store.owned_by("alice", 2).unwrap()), vec![30, 20]);
        assert_eq!(store.owned_by("bob", 10).unwrap().len(), 1);
        assert!(store.owned_by("ali", 10).unwrap().is_empty());

        assert!(store.remove(&alice[1]).unwrap());
        assert!(!store.remove(&alice[1]).unwrap());
        assert_eq!(store.get(&alice[1]), None);
        assert!(!files(&tmp.images()).contains_key(&alice[1]));
        assert_eq!(created(store.owned_by("alice", 10).unwrap()), vec![20, 10]);
        assert_eq!((store.len(), store.total_bytes()), (5, 250));
    }

    #[test]
    fn concurrent_inserts_keep_totals_exact() {
        let tmp = TempDir::new("concurrent");
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = ImageStore::open(&db, &tmp.images(), 3000).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..40 {
                        // Half of the images are common to all threads, so inserts, removals
                        // and evictions of one hash race too.
                        let tag = if i % 2 == 0 {
                            format!("shared{i}")
                        } else {
                            format!("t{t}-{i}")
                        };
                        let data = image(&tag, 50 + (i * 37) % 400);
                        store
                            .insert(meta(&data, i as i64, Some("u")), &data)
                            .unwrap();
                        if i % 4 == 0 {
                            store.remove(&hash_of(&data)).unwrap();
                        }
                        if i % 3 == 0 {
                            let _ = store.read(&hash_of(&image("shared0", 50))).unwrap();
                        }
                        if i % 7 == 0 {
                            store.flush_accesses().unwrap();
                        }
                    }
                });
            }
        });
        let st = store.state();
        let sum: u64 = st.entries.values().map(|e| e.meta.size).sum();
        assert_eq!(st.total, sum);
        assert!(st.total <= 3000);
        assert!(st.busy.is_empty());
        assert_eq!(st.lru.len(), st.entries.len());
        let on_disk = files(&tmp.images());
        let expected: HashMap<String, u64> = st
            .entries
            .values()
            .map(|e| (e.meta.hash.clone(), e.meta.size))
            .collect();
        assert_eq!(on_disk, expected);
        assert_eq!(db.open_tree("images").unwrap().len(), st.entries.len());
    }
}
