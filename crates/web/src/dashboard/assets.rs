//! The dashboard's static files, embedded in the binary: the vendored htmx, its SSE extension
//! and uPlot (`assets/vendor`, copied from npm by `e2e/vendor.mjs` at the versions
//! `e2e/package-lock.json` pins), and our own small stylesheet and script. Each is served at
//! `/assets/HASH/NAME`, where HASH is the start of its SHA-256: the URL changes whenever the
//! content does, so browsers may cache it for a year. htmx, the largest, is also embedded as
//! the gzip file its npm package ships, and sent as such to browsers that accept gzip.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Hex digits of the content hash in an asset's URL.
const HASH_LEN: usize = 12;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The same content gzipped, when we have it.
    gzip: Option<&'static [u8]>,
    hash: String,
}

/// Gzipped forms of some files, as their npm packages ship them beside the file itself.
const GZIPPED: &[(&str, &[u8])] = &[(
    "htmx.min.js",
    include_bytes!("../../assets/vendor/htmx.min.js.gz"),
)];

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx.min.js"),
    ),
    (
        "htmx-sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx-sse.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/favicon.svg"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard.js"),
    ),
];

fn assets() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, content_type, bytes)| {
                let digest = Sha256::digest(bytes);
                let hash: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
                Asset {
                    name,
                    content_type,
                    bytes,
                    gzip: GZIPPED
                        .iter()
                        .find(|(gzipped, _)| gzipped == name)
                        .map(|(_, bytes)| *bytes),
                    hash: hash[..HASH_LEN].to_string(),
                }
            })
            .collect()
    })
}

/// The URL of the embedded file `name` (one of [`FILES`]).
pub(crate) fn url(name: &str) -> String {
    match assets().iter().find(|asset| asset.name == name) {
        Some(asset) => format!("/assets/{}/{}", asset.hash, asset.name),
        None => {
            debug_assert!(false, "no embedded asset {name}");
            format!("/assets/missing/{name}")
        }
    }
}

/// The URLs the page layout links.
#[derive(Debug)]
pub(crate) struct Urls {
    pub(crate) htmx: String,
    pub(crate) sse: String,
    pub(crate) uplot: String,
    pub(crate) uplot_css: String,
    pub(crate) css: String,
    pub(crate) js: String,
    pub(crate) favicon: String,
}

pub(crate) fn urls() -> &'static Urls {
    static URLS: OnceLock<Urls> = OnceLock::new();
    URLS.get_or_init(|| Urls {
        htmx: url("htmx.min.js"),
        sse: url("htmx-sse.min.js"),
        uplot: url("uPlot.iife.min.js"),
        uplot_css: url("uPlot.min.css"),
        css: url("dashboard.css"),
        js: url("dashboard.js"),
        favicon: url("favicon.svg"),
    })
}

/// Whether `Accept-Encoding` takes gzip: `gzip` (or `x-gzip`, or `*` when gzip is not named)
/// with a quality above zero (`gzip;q=0` refuses it).
fn takes_gzip(headers: &axum::http::HeaderMap) -> bool {
    let mut star = None;
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|param| param.trim().split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, value)| value.trim().parse::<f32>().ok());
        let accepted = quality.is_some_and(|quality| quality > 0.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => return accepted,
            "*" => star = Some(accepted),
            _ => {}
        }
    }
    star.unwrap_or(false)
}

/// `GET /assets/{hash}/{name}`: the file, cached for a year (the hash pins its content). A
/// stale hash (a page from before an upgrade) is 404, never the wrong content under a
/// cacheable URL.
pub(crate) async fn serve(
    Path((hash, name)): Path<(String, String)>,
    request_headers: axum::http::HeaderMap,
) -> Response {
    let Some(asset) = assets()
        .iter()
        .find(|asset| asset.name == name && asset.hash == hash)
    else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "no such asset; reload the page",
        )
            .into_response();
    };
    let takes_gzip = takes_gzip(&request_headers);
    let mut response = match asset.gzip {
        Some(gzip) if takes_gzip => {
            let mut response = gzip.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        _ => asset.bytes.into_response(),
    };
    let headers = response.headers_mut();
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_parsed() {
        let takes = |value: &'static str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            takes_gzip(&headers)
        };
        assert!(takes("gzip, deflate, br"));
        assert!(takes("br;q=1.0, GZIP;q=0.5"));
        assert!(takes("*"));
        assert!(!takes("gzip;q=0"));
        assert!(!takes("gzip; q=0.000, *"));
        assert!(!takes("identity"));
        assert!(!takes("br, *;q=0"));
        assert!(!takes("gzipx"));
        assert!(!takes_gzip(&axum::http::HeaderMap::new()));
    }
}
