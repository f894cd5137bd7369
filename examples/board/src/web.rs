//! The front end: the built Svelte bundle (`web/dist`, embedded in release builds), served with
//! content types, cache headers and ETags, plus the identity cookies on page loads.

use crate::identity;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::Router;
use liveroom::UpgradeRequest;
use rust_embed::RustEmbed;
use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// `examples/board/web/dist`, built by `npm run build` in `examples/board/web`. Release builds
/// embed it; debug builds read it from disk, so a rebuilt front end shows up without
/// recompiling.
#[derive(RustEmbed)]
#[folder = "web/dist/"]
#[allow_missing = true]
struct Dist;

/// Shown when the bundle was not built.
const PLACEHOLDER: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>liveroom board</title></head>
<body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto\">
<h1>liveroom board</h1>
<p>The server is running, but the front end was not built into it. Run
<code>npm ci &amp;&amp; npm run build</code> in <code>examples/board/web</code>, then rebuild the
server (or start it with <code>--static-dir examples/board/web/dist</code>).</p>
</body></html>
";

/// Where the front end's files come from.
#[derive(Debug, Clone)]
pub enum Assets {
    /// The bundle compiled into the binary.
    Embedded,
    /// A directory on disk (`--static-dir`), for front-end development.
    Dir(PathBuf),
}

struct File {
    bytes: Cow<'static, [u8]>,
    mime: String,
    etag: Option<String>,
}

impl Assets {
    fn get(&self, path: &str) -> Option<File> {
        match self {
            Assets::Embedded => {
                let f = Dist::get(path)?;
                let hash: String = f.metadata.sha256_hash()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                Some(File {
                    mime: f.metadata.mimetype().to_owned(),
                    bytes: f.data,
                    etag: Some(format!("\"{hash}\"")),
                })
            }
            Assets::Dir(dir) => {
                let rel = Path::new(path);
                if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                    return None;
                }
                let bytes = std::fs::read(dir.join(rel)).ok()?;
                Some(File {
                    mime: mime_guess::from_path(rel)
                        .first_or_octet_stream()
                        .essence_str()
                        .to_owned(),
                    bytes: Cow::Owned(bytes),
                    etag: None,
                })
            }
        }
    }

    fn index(&self) -> File {
        self.get("index.html").unwrap_or(File {
            bytes: Cow::Borrowed(PLACEHOLDER.as_bytes()),
            mime: "text/html".into(),
            etag: None,
        })
    }
}

/// The routes serving the front end (a fallback, so it never shadows `/ws` and friends).
pub fn routes(assets: Assets) -> Router {
    Router::new().fallback(serve).with_state(Arc::new(assets))
}

async fn serve(State(assets): State<Arc<Assets>>, req: Request) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(Body::empty())
            .expect("valid response");
    }
    let path = req.uri().path().trim_start_matches('/');
    let (file, page) = match path {
        "" | "index.html" => (assets.index(), true),
        _ => match assets.get(path) {
            Some(f) => (f, path.ends_with(".html")),
            // Client-side routes (anything without a file extension) get the page.
            None if !path.rsplit('/').next().unwrap_or("").contains('.') => (assets.index(), true),
            None => return not_found(),
        },
    };
    let cache = if page {
        "no-cache"
    } else if path.starts_with("assets/") {
        // Vite puts a content hash in these names.
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    };
    let mut res = Response::builder()
        .header(header::CONTENT_TYPE, content_type(&file.mime))
        .header(header::CACHE_CONTROL, cache)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if page {
        let view = UpgradeRequest::new(req.headers().clone(), None, None);
        for cookie in identity::missing_cookies(&view) {
            res = res.header(header::SET_COOKIE, cookie);
        }
    }
    if let Some(etag) = &file.etag {
        res = res.header(header::ETAG, etag);
        if etag_matches(req.headers(), etag) {
            return res
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("valid response");
        }
    }
    res.body(Body::from(file.bytes)).expect("valid response")
}

fn content_type(mime: &str) -> HeaderValue {
    let text = mime.starts_with("text/") || mime == "application/javascript";
    let value = if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("not found"))
        .expect("valid response")
}
