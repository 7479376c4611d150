//! Images (SPEC §3.4): `GET /prompt/{description}` generate-or-fetch behind a bounded cache
//! with single flight, failover and optional hosting; `/images/{hash}.{ext}`; and the stored
//! images of `/v1/images/*` responses (`store_generations`).
//!
//! The cache lives on disk below `storage.path/images`, indexed in sled (see `store`). It opens
//! with the rest of the store, after Pingora has forked.

pub mod flight;
pub mod generate;
pub mod generations;
pub mod hosting;
pub mod params;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::app::App;
use crate::config::ImagesSection;
use crate::gateway::upstream::Pool;
use crate::outbound::HttpClient;
use crate::store::{StoreError, StoreResult, STORE_WAIT};

use flight::Flights;
use generate::{Failure, Generated};
use hosting::{ImageHost, Upload};
use params::PromptParams;
use store::{ImageMeta, ImageSource, ImageStore};

/// Stored generations waiting for the write-behind task, in bytes; beyond this, new ones are
/// not kept and their responses keep `b64_json` (see `generations`).
const PENDING_BYTES: usize = 256 * 1024 * 1024;

/// An image ready to answer with.
#[derive(Clone, Debug)]
pub struct Ready {
    pub meta: ImageMeta,
    pub bytes: Bytes,
}

/// What `/prompt` obtained for a request.
pub struct Obtained {
    pub image: Arc<Ready>,
    /// The cache had it (this request made no image).
    pub hit: bool,
    /// It joined a generation another request had started.
    pub joined: bool,
}

/// A flight's result: the image, and whether the flight made it (rather than finding it in
/// the cache, where a flight that had just landed left it).
type GenerationResult = Result<(Arc<Ready>, bool), Failure>;

pub struct Images {
    pub config: ImagesSection,
    pool: Arc<Pool>,
    /// Empty until the store opens, and again once it is handed to a new process.
    cache: RwLock<Option<Arc<ImageStore>>>,
    generations: Flights<GenerationResult>,
    uploads: Flights<Option<String>>,
    host: Option<Arc<dyn ImageHost>>,
    client: HttpClient,
    /// Stored generations not yet on disk, served from memory meanwhile.
    pending: Mutex<HashMap<String, Ready>>,
}

impl Images {
    pub fn new(config: ImagesSection, pool: Arc<Pool>) -> Images {
        Images {
            host: config
                .hosting
                .as_ref()
                .map(|h| Arc::from(hosting::host_for(h))),
            config,
            pool,
            cache: RwLock::new(None),
            generations: Flights::default(),
            uploads: Flights::default(),
            client: HttpClient::default(),
            pending: Mutex::default(),
        }
    }

    /// Opens the cache in sled's database; called once, on a blocking thread, before the store
    /// is published to request handlers.
    pub fn open(&self, db: &sled::Db, storage: &std::path::Path) -> StoreResult<()> {
        let cache = ImageStore::open(db, &storage.join("images"), self.config.max_cache_bytes)?;
        log::info!(
            "image cache: {} images, {} bytes",
            cache.len(),
            cache.total_bytes()
        );
        if let Ok(mut slot) = self.cache.write() {
            *slot = Some(Arc::new(cache));
        }
        Ok(())
    }

    fn cache_now(&self) -> Option<Arc<ImageStore>> {
        self.cache.read().ok().and_then(|c| c.clone())
    }

    /// Takes the cache out for the upgrade handoff (it holds sled trees).
    pub fn release_cache(&self) -> Option<Arc<ImageStore>> {
        self.cache.write().ok().and_then(|mut c| c.take())
    }

    /// The cache, waiting for the store to open at start-up.
    async fn cache(&self, app: &App) -> StoreResult<Arc<ImageStore>> {
        app.store.wait(STORE_WAIT).await;
        self.cache_now()
            .ok_or_else(|| StoreError("the image cache is not open".into()))
    }

    pub fn hosting_enabled(&self) -> bool {
        self.host.is_some()
    }

    /// Whether the cache has the image, without reading it or counting an access.
    pub fn contains(&self, hash: &str) -> bool {
        self.cache_now().is_some_and(|c| c.get(hash).is_some())
            || self.pending.lock().is_ok_and(|p| p.contains_key(hash))
    }

    /// A cached or pending image by hash, counting an access.
    pub async fn read(&self, app: &App, hash: &str) -> StoreResult<Option<Ready>> {
        if let Some(ready) = self.pending.lock().ok().and_then(|p| p.get(hash).cloned()) {
            return Ok(Some(ready));
        }
        let cache = self.cache(app).await?;
        let hash = hash.to_string();
        let read = blocking(move || cache.read(&hash)).await?;
        Ok(read.map(|(meta, bytes)| Ready { meta, bytes }))
    }

    /// The image for a `/prompt` request: from the cache, or generated once for all concurrent
    /// requests for it.
    pub async fn obtain(app: &Arc<App>, params: PromptParams) -> Result<Obtained, Failure> {
        let Some(images) = app.images.as_ref() else {
            return Err(Failure::Unavailable("images are not configured".into()));
        };
        let hash = params.cache_key();
        match images.read(app, &hash).await {
            Ok(Some(ready)) => {
                return Ok(Obtained {
                    image: Arc::new(ready),
                    hit: true,
                    joined: false,
                })
            }
            Ok(None) => {}
            Err(e) => log::error!("image cache read failed, generating instead: {e}"),
        }
        let task_app = app.clone();
        let task_hash = hash.clone();
        let landed = images
            .generations
            .run(
                &hash,
                move || async move { generate_and_store(task_app, task_hash, params).await },
                Err(Failure::Unavailable(
                    "the image generation task failed".into(),
                )),
            )
            .await;
        landed.value.map(|(image, generated)| Obtained {
            image,
            hit: !generated,
            joined: landed.joined,
        })
    }

    /// The hosted URL of an image, uploading it first if it has none yet (once, however many
    /// requests ask at the same time). `None` when the upload failed: the bytes are served
    /// instead, and a later request tries again.
    pub async fn hosted_url(app: &Arc<App>, ready: &Ready) -> Option<String> {
        let images = app.images.as_ref()?;
        if let Some(url) = &ready.meta.hosted_url {
            return Some(url.clone());
        }
        images.host.as_ref()?;
        let task_app = app.clone();
        let ready = ready.clone();
        let hash = ready.meta.hash.clone();
        images
            .uploads
            .run(
                &hash,
                move || async move { upload_once(task_app, ready).await },
                None,
            )
            .await
            .value
    }

    /// Removes an image from the cache; `false` when it was not there.
    pub async fn delete(&self, app: &App, hash: &str) -> StoreResult<bool> {
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(hash))
            .is_some();
        let cache = self.cache(app).await?;
        let hash = hash.to_string();
        let removed = blocking(move || cache.remove(&hash)).await?;
        Ok(removed || pending)
    }

    /// The caller's stored generations, newest first.
    pub async fn owned_by(
        &self,
        app: &App,
        user: &str,
        limit: usize,
    ) -> StoreResult<Vec<ImageMeta>> {
        let cache = self.cache(app).await?;
        let user = user.to_string();
        blocking(move || cache.owned_by(&user, limit)).await
    }

    /// Writes the last-access times of images read since the last call.
    pub fn flush_accesses(&self) {
        if let Some(cache) = self.cache_now() {
            if let Err(e) = cache.flush_accesses() {
                log::error!("recording image accesses failed: {e}");
            }
        }
    }

    /// Keeps the generations of a `/v1/images/*` response: served from memory at once, written
    /// to disk by the next write-behind tick. Synchronous and non-blocking (called from a body
    /// filter). All or none: `false` when too much is waiting to be written already.
    pub fn keep_generations(&self, images: Vec<Ready>) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        let waiting: usize = pending.values().map(|r| r.bytes.len()).sum();
        let adding: usize = images.iter().map(|r| r.bytes.len()).sum();
        if waiting + adding > PENDING_BYTES {
            return false;
        }
        for ready in images {
            pending.insert(ready.meta.hash.clone(), ready);
        }
        true
    }

    /// Writes the kept generations to the cache (blocking: called by the write-behind task,
    /// and once more at shutdown).
    pub fn write_pending(&self, metrics: &crate::metrics::Metrics) {
        let Some(cache) = self.cache_now() else {
            return;
        };
        let waiting: Vec<Ready> = match self.pending.lock() {
            Ok(pending) => pending.values().cloned().collect(),
            Err(_) => return,
        };
        for ready in waiting {
            let hash = ready.meta.hash.clone();
            match cache.insert(ready.meta, &ready.bytes) {
                Ok(insertion) => count_evictions(metrics, insertion.evicted.len()),
                // Dropped rather than retried: a full or broken disk must not grow memory.
                Err(e) => log::error!("storing generated image {hash} failed: {e}"),
            }
            if let Ok(mut pending) = self.pending.lock() {
                pending.remove(&hash);
            }
        }
    }
}

fn count_evictions(metrics: &crate::metrics::Metrics, n: usize) {
    if n > 0 {
        metrics
            .image_cache
            .with_label_values(&["evicted"])
            .inc_by(n as u64);
    }
}

async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| StoreError(format!("image store task failed: {e}")))?
}

/// The work of one generation flight: generate, store, and upload when hosting is on.
async fn generate_and_store(app: Arc<App>, hash: String, params: PromptParams) -> GenerationResult {
    let Some(images) = app.images.as_ref() else {
        return Err(Failure::Unavailable("images are not configured".into()));
    };
    if let Ok(Some(ready)) = images.read(&app, &hash).await {
        return Ok((Arc::new(ready), false));
    }
    let Generated {
        bytes,
        content_type,
        revised_prompt,
    } = generate::generate(
        &images.client,
        &app.resolver,
        &images.pool,
        &app.metrics,
        &params,
    )
    .await?;
    let now = crate::time::now_unix();
    let mut ready = Ready {
        meta: ImageMeta {
            hash,
            content_type: content_type.to_string(),
            size: bytes.len() as u64,
            created: now,
            last_access: now,
            hits: 0,
            revised_prompt,
            hosted_url: None,
            owner: None,
            key_id: None,
            source: ImageSource::Prompt,
        },
        bytes,
    };
    // Uploaded before it is cached: a request that finds it in the cache finds it hosted, and
    // one that comes earlier joins this flight; either way it is uploaded once.
    if images.host.is_some() {
        ready.meta.hosted_url = upload_once(app.clone(), ready.clone()).await;
    }
    match images.cache(&app).await {
        Ok(cache) => {
            let (m, b) = (ready.meta.clone(), ready.bytes.clone());
            match blocking(move || cache.insert(m, &b)).await {
                Ok(insertion) => count_evictions(&app.metrics, insertion.evicted.len()),
                // The client still gets its image; the next request generates it again.
                Err(e) => log::error!("caching image {} failed: {e}", ready.meta.hash),
            }
        }
        Err(e) => log::error!("caching image {} failed: {e}", ready.meta.hash),
    }
    Ok((Arc::new(ready), true))
}

/// Uploads an image to the hosting provider and records its URL in the cache index.
async fn upload_once(app: Arc<App>, ready: Ready) -> Option<String> {
    let images = app.images.as_ref()?;
    let host = images.host.as_ref()?;
    let filename = format!("{}.{}", ready.meta.hash, ready.meta.ext());
    let upload = Upload {
        bytes: &ready.bytes,
        content_type: &ready.meta.content_type,
        filename: &filename,
    };
    let url = match host.upload(&images.client, &app.resolver, &upload).await {
        Ok(url) => url,
        Err(e) => {
            log::warn!(
                "uploading image {} to {} failed: {e}",
                ready.meta.hash,
                host.provider()
            );
            return None;
        }
    };
    if let Ok(cache) = images.cache(&app).await {
        let (hash, u) = (ready.meta.hash.clone(), url.clone());
        if let Err(e) = blocking(move || cache.set_hosted_url(&hash, &u)).await {
            log::error!(
                "recording the hosted URL of {} failed: {e}",
                ready.meta.hash
            );
        }
    }
    Some(url)
}
