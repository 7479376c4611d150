//! The HTTP side of images on the public listeners: `GET /prompt/…`, `GET /images/{hash}.{ext}`,
//! `GET /account/images`, and `POST /cache/delete`. The image work itself is in `crate::images`.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{json, Value};

use crate::app::App;
use crate::images::generate::Failure;
use crate::images::generations::{Keeper, Rewrite};
use crate::images::params::{self, PromptParams, RawParams};
use crate::images::{Images, Ready};
use crate::store::KeyRecord;
use crate::time::rfc3339;

use super::ctx::RequestCtx;
use super::model_gate::{multipart_field, BodyKind};
use super::respond::{ApiError, LocalResponse};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A hosted copy can be deleted on the host's side: redirects are cached for a day only.
const REDIRECT_CACHE: &str = "public, max-age=86400";

fn images(app: &App) -> Result<&Images, ApiError> {
    app.images
        .as_ref()
        .ok_or_else(|| ApiError::not_found("/prompt (images are not configured)"))
}

fn storage_error(e: crate::store::StoreError) -> ApiError {
    log::error!("image storage: {e}");
    ApiError::service_unavailable("Image storage is unavailable.")
}

fn param_error(e: params::ParamError) -> ApiError {
    ApiError::invalid_request(e.message).with_param(e.param)
}

/// The `/prompt` parameters of a request, with the description taken from the path.
pub fn prompt_params(app: &App, session: &Session) -> Result<PromptParams, ApiError> {
    let images = images(app)?;
    let uri = &session.req_header().uri;
    let encoded = uri.path().strip_prefix("/prompt/").unwrap_or("");
    PromptParams::from_request(encoded, uri.query(), &images.config).map_err(param_error)
}

/// Whether a `/prompt` request will have to make an image (it counts against
/// `images_per_day`), judged from the cache index in memory.
pub fn is_miss(app: &App, params: &PromptParams) -> bool {
    app.images
        .as_ref()
        .is_some_and(|i| !i.contains(&params.cache_key()))
}

/// `GET /prompt/{description}` for an admitted request (SPEC §3.4).
pub async fn prompt(
    app: &Arc<App>,
    session: &Session,
    ctx: &mut RequestCtx,
    params: PromptParams,
) -> Result<LocalResponse, ApiError> {
    let images = images(app)?;
    let obtained = Images::obtain(app, params).await;
    let made_image = matches!(&obtained, Ok(o) if !o.hit && !o.joined);
    if let Some(ticket) = ctx.ticket.as_mut() {
        if made_image {
            ctx.images_made = u64::from(ticket.made_image());
        } else {
            ticket.refund_image(crate::time::now_unix_ms());
        }
    }
    let obtained = match obtained {
        Ok(obtained) => obtained,
        Err(Failure::Unavailable(why)) => {
            log::warn!("{}: no image: {why}", ctx.request_id);
            return Err(ApiError::upstream_unavailable(&app_pool_name(images)));
        }
        Err(Failure::Refused {
            status,
            content_type,
            body,
        }) => return LocalResponse::new(status, &content_type, body).map_err(internal),
    };
    let result = match (obtained.hit, obtained.joined) {
        (true, _) => "hit",
        (false, true) => "coalesced",
        (false, false) => "miss",
    };
    app.metrics.image_cache.with_label_values(&[result]).inc();
    let x_cache = if obtained.hit { "HIT" } else { "MISS" };
    let image = &obtained.image;
    if images.hosting_enabled() {
        // A miss tried the upload already; a failed upload leaves the bytes to serve, and the
        // next request tries again.
        let url = match &image.meta.hosted_url {
            Some(url) => Some(url.clone()),
            None if obtained.hit => Images::hosted_url(app, image).await,
            None => None,
        };
        if let Some(url) = url {
            return redirect(&image.meta.hash, &url, x_cache).map_err(internal);
        }
    }
    if obtained.hit && matches_etag(session, &image.meta.hash) {
        return not_modified(&image.meta.hash).map_err(internal);
    }
    image_response(image, Some(x_cache)).map_err(internal)
}

fn app_pool_name(images: &Images) -> String {
    images.config.upstream.clone()
}

fn internal(e: Box<pingora::Error>) -> ApiError {
    log::error!("building an image response: {e}");
    ApiError::internal()
}

/// `GET /images/{hash}.{ext}`: public, immutable.
pub async fn stored(app: &App, session: &Session) -> Result<LocalResponse, ApiError> {
    let path = session.req_header().uri.path();
    let not_found = || ApiError::not_found(path);
    let images = app.images.as_ref().ok_or_else(not_found)?;
    let name = path.strip_prefix("/images/").ok_or_else(not_found)?;
    let (hash, ext) = name.split_once('.').ok_or_else(not_found)?;
    if !params::valid_hash(hash) {
        return Err(not_found());
    }
    if matches_etag(session, hash) && images.contains(hash) {
        return not_modified(hash).map_err(internal);
    }
    let ready = images
        .read(app, hash)
        .await
        .map_err(storage_error)?
        .ok_or_else(not_found)?;
    if ready.meta.ext() != ext {
        return Err(not_found());
    }
    image_response(&ready, None).map_err(internal)
}

/// `GET /account/images?limit=N`: the caller's stored generations, newest first.
pub async fn account_images(
    app: &App,
    key: &KeyRecord,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let Some(images) = app.images.as_ref() else {
        return Ok(json!({"data": []}));
    };
    let limit = crate::form::query_pairs(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "limit")
        .map(|(_, v)| v.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)))
        .unwrap_or(Some(100))
        .ok_or_else(|| {
            ApiError::invalid_request("limit must be an integer from 1 to 1000").with_param("limit")
        })?;
    let base = images.config.public_url.clone().unwrap_or_default();
    let data: Vec<Value> = images
        .owned_by(app, &key.user, limit)
        .await
        .map_err(storage_error)?
        .into_iter()
        .map(|m| {
            json!({
                "hash": m.hash,
                "url": format!("{base}/images/{}.{}", m.hash, m.ext()),
                "content_type": m.content_type,
                "size": m.size,
                "created_at": rfc3339(m.created),
                "key_id": m.key_id,
                "revised_prompt": m.revised_prompt,
            })
        })
        .collect();
    Ok(json!({ "data": data }))
}

/// `POST /admin/images/purge` and `POST /cache/delete`: the image a `/prompt` request with
/// these parameters would get, deleted. `Ok(None)` when it is not cached.
pub async fn purge(app: &App, body: &[u8]) -> Result<Option<String>, ApiError> {
    let images = images(app)?;
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid_request("The body must be a JSON object."))?;
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match json.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::invalid_request(format!(
                "`{name}` must be a string or a number."
            ))),
        }
    };
    let description = text("description")?.ok_or_else(|| {
        ApiError::invalid_request("`description` is required.").with_param("description")
    })?;
    let (width, height, model, seed) = (
        text("width")?,
        text("height")?,
        text("model")?,
        text("seed")?,
    );
    let raw = RawParams {
        width: width.as_deref(),
        height: height.as_deref(),
        model: model.as_deref(),
        seed: seed.as_deref(),
    };
    let params =
        PromptParams::from_parts(&description, &raw, &images.config).map_err(param_error)?;
    let hash = params.cache_key();
    let deleted = images.delete(app, &hash).await.map_err(storage_error)?;
    Ok(deleted.then_some(hash))
}

/// For a `/v1/images/generations` or `/v1/images/edits` request while `store_generations` is
/// on: who the images belong to and the base of their URLs (`public_url`, else this request's
/// own scheme and `Host`).
pub fn keeper(
    app: &App,
    session: &Session,
    key: &KeyRecord,
    has_body: bool,
    tls: bool,
) -> Option<Keeper> {
    let images = app.images.as_ref()?;
    let req = session.req_header();
    let path = req.uri.path();
    let applies = images.config.store_generations
        && has_body
        && req.method == http::Method::POST
        && (path == "/v1/images/generations" || path == "/v1/images/edits");
    if !applies {
        return None;
    }
    let base_url = match &images.config.public_url {
        Some(url) => url.clone(),
        None => {
            let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
            format!("{}://{host}", if tls { "https" } else { "http" })
        }
    };
    Some(Keeper {
        keep_b64: false,
        owner: key.user.clone(),
        key_id: key.id.clone(),
        base_url,
    })
}

/// A successful JSON response to a request `store_generations` applies to is rewritten; its
/// length changes, so Pingora frames it anew.
pub fn start_rewrite(ctx: &mut RequestCtx, resp: &mut ResponseHeader) {
    let Some(keeper) = ctx.keeper.take() else {
        return;
    };
    let is_json = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if resp.status.is_success() && is_json {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        ctx.image_rewrite = Some(Rewrite::new(keeper));
    }
}

/// The request asked for `response_format: b64_json` (JSON or multipart body).
pub fn wants_b64(body: &[u8], content_type: Option<&str>) -> bool {
    let format = match content_type.and_then(BodyKind::from_content_type) {
        Some(BodyKind::Json) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("response_format")?.as_str().map(str::to_owned)),
        Some(BodyKind::Multipart { boundary }) => {
            multipart_field(body, &boundary, "response_format")
        }
        None => None,
    };
    format.is_some_and(|f| f.trim() == "b64_json")
}

/// `If-None-Match` names this image (or is `*`).
fn matches_etag(session: &Session, hash: &str) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == "*" || tag == hash)
}

fn image_response(image: &Ready, x_cache: Option<&str>) -> pingora::Result<LocalResponse> {
    let mut header = ResponseHeader::build(200, Some(8))?;
    header.insert_header("content-type", image.meta.content_type.as_str())?;
    header.insert_header("content-length", image.bytes.len().to_string())?;
    header.insert_header("etag", format!("\"{}\"", image.meta.hash))?;
    header.insert_header("cache-control", IMMUTABLE)?;
    if let Some(x_cache) = x_cache {
        header.insert_header("x-cache", x_cache)?;
    }
    Ok(LocalResponse {
        header,
        body: image.bytes.clone(),
    })
}

fn not_modified(hash: &str) -> pingora::Result<LocalResponse> {
    let mut header = ResponseHeader::build(304, Some(4))?;
    header.insert_header("etag", format!("\"{hash}\""))?;
    header.insert_header("cache-control", IMMUTABLE)?;
    header.insert_header("x-cache", "HIT")?;
    Ok(LocalResponse {
        header,
        body: Bytes::new(),
    })
}

fn redirect(hash: &str, url: &str, x_cache: &str) -> pingora::Result<LocalResponse> {
    let mut header = ResponseHeader::build(302, Some(6))?;
    header.insert_header("location", url)?;
    header.insert_header("content-length", "0")?;
    header.insert_header("etag", format!("\"{hash}\""))?;
    header.insert_header("cache-control", REDIRECT_CACHE)?;
    header.insert_header("x-cache", x_cache)?;
    Ok(LocalResponse {
        header,
        body: Bytes::new(),
    })
}
