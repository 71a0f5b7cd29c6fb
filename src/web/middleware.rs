//! Cross-cutting layers: security headers, CSRF, error pages, and the HTTP figures.
//! `app.rs` applies them in one place, in order.

use askama::Template as _;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq as _;
use tower_http::request_id::RequestId;
use tower_sessions::Session;

use super::session::{Banner, KEY_CSRF};
use super::{AppState, ErrorPage};

/// Largest url-encoded form body accepted.
pub const FORM_LIMIT: usize = 64 * 1024;
/// Largest multipart upload accepted (certificates, keys, bundles).
pub const UPLOAD_LIMIT: usize = 1024 * 1024;

/// No inline scripts or styles anywhere; pages are never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Sets the security headers on every response, and `Cache-Control: no-store` on
/// everything but static files (pages may carry PHI).
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let https = super::is_https(&parts, &state.config);
    let is_static = parts.uri.path().starts_with("/static/");
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let headers = response.headers_mut();
    // a handler may set a stricter policy of its own (sandboxed bodies, attachments)
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::X_FRAME_OPTIONS) {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !is_static {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
        secure_cookies(headers);
    }
    response
}

/// Marks cookies `Secure` when the browser is on HTTPS, including behind a trusted
/// proxy that terminates TLS (the session layer only knows the static setting).
fn secure_cookies(headers: &mut axum::http::HeaderMap) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| {
            let text = v.to_str().unwrap_or_default();
            if text.is_empty() || text.to_ascii_lowercase().contains("; secure") {
                v.clone()
            } else {
                HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or_else(|_| v.clone())
            }
        })
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// Refuses every state-changing request that does not carry the session's CSRF token,
/// in the `X-CSRF-Token` header (htmx, scripts) or the `_csrf` form field.
///
/// A refused or oversized form is answered by re-rendering the page it came from (its
/// GET) with a banner saying why, so the user sees the form again rather than a dead
/// end; routes with no GET page get the error page.
pub async fn csrf(session: Session, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    // The API authenticates each request with a bearer token, which a browser never
    // adds on its own, and ignores cookies: there is no session to forge requests with.
    if request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let expected = match session.get::<String>(KEY_CSRF).await {
        Ok(Some(token)) => token,
        Ok(None) => String::new(),
        Err(e) => return super::AppError::from(e).into_response(),
    };
    let (parts, body) = request.into_parts();
    let header_token = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (supplied, body) = match header_token {
        Some(token) => (token, body),
        None if content_type.starts_with("multipart/form-data") => {
            match to_bytes(body, UPLOAD_LIMIT).await {
                Ok(bytes) => {
                    let token = match multer::parse_boundary(&content_type) {
                        Ok(boundary) => multipart_field(bytes.clone(), boundary, "_csrf").await,
                        Err(_) => String::new(),
                    };
                    (token, Body::from(bytes))
                }
                Err(_) => {
                    return rerender(
                        parts,
                        next,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "The files you sent were larger than this form accepts (1 MB), so nothing was saved.",
                    )
                    .await;
                }
            }
        }
        None => {
            let is_form = content_type.starts_with("application/x-www-form-urlencoded");
            if !is_form {
                (String::new(), body)
            } else {
                match to_bytes(body, FORM_LIMIT).await {
                    Ok(bytes) => {
                        let token = url::form_urlencoded::parse(&bytes)
                            .find(|(k, _)| k == "_csrf")
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default();
                        (token, Body::from(bytes))
                    }
                    Err(_) => {
                        return rerender(
                            parts,
                            next,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "What you sent was larger than this form accepts (64 KB), so nothing was saved. Shorten the text and send it again.",
                        )
                        .await;
                    }
                }
            }
        }
    };
    let matches = !expected.is_empty()
        && supplied.len() == expected.len()
        && bool::from(supplied.as_bytes().ct_eq(expected.as_bytes()));
    if !matches {
        tracing::warn!(
            path = %super::loggable_path(parts.uri.path()),
            "refused a request without a valid CSRF token"
        );
        return rerender(
            parts,
            next,
            StatusCode::FORBIDDEN,
            "This form had expired or did not come from this site, so nothing was changed. It has been reloaded: check it and send it again.",
        )
        .await;
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The text of one field of a buffered multipart body ("" when absent).
async fn multipart_field(bytes: axum::body::Bytes, boundary: String, name: &str) -> String {
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some(name) {
            return field.text().await.unwrap_or_default();
        }
    }
    String::new()
}

/// Answers a refused form post with its page, fetched as a GET, under `status`.
async fn rerender(
    mut parts: axum::http::request::Parts,
    next: Next,
    status: StatusCode,
    message: &str,
) -> Response {
    parts.method = Method::GET;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(Banner(message.to_owned()));
    let mut response = next.run(Request::from_parts(parts, Body::empty())).await;
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
        response
    } else {
        let mut response = status.into_response();
        response.extensions_mut().insert(ErrorPage {
            message: message.to_owned(),
        });
        response
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorTemplate<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Renders an error page for responses marked with [`ErrorPage`] and for bare
/// 404/405/413 responses from the router, with the request id to quote.
pub async fn error_pages(request: Request, next: Next) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let is_htmx = request.headers().contains_key("hx-request");
    let response = next.run(request).await;
    let status = response.status();
    let marked = response.extensions().get::<ErrorPage>().cloned();
    let message = match marked {
        Some(page) => page.message,
        None if response.headers().contains_key(header::CONTENT_TYPE) => return response,
        None => match status {
            StatusCode::NOT_FOUND => {
                "We could not find that page. It may have moved, or you may not have access to it."
                    .to_owned()
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                "That address does not accept this kind of request.".to_owned()
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                "What you sent was larger than this page accepts, so nothing was saved.".to_owned()
            }
            _ => return response,
        },
    };
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::BAD_REQUEST => "Something in the request was wrong",
        StatusCode::PAYLOAD_TOO_LARGE => "Too large",
        StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong",
        _ => "This did not work",
    };
    let mut headers = response.headers().clone();
    headers.remove(header::CONTENT_LENGTH);
    let body = if is_htmx {
        // htmx shows this text in a toast (static/app.js)
        format!("{message} (request id {request_id})")
    } else {
        ErrorTemplate {
            status: status.as_u16(),
            title,
            message: &message,
            request_id: &request_id,
        }
        .render()
        .unwrap_or_else(|_| format!("{title}. Request id {request_id}."))
    };
    let mut out = if is_htmx {
        (status, body).into_response()
    } else {
        (status, Html(body)).into_response()
    };
    for (name, value) in headers.iter() {
        if name != header::CONTENT_TYPE {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The template of the route a request matched, noted by [`note_route`] inside the
/// router for [`http_figures`] outside every layer (an error page replaces the
/// response, so the request carries the slot, not the response).
#[derive(Clone, Default)]
pub struct RouteSlot(std::sync::Arc<std::sync::OnceLock<String>>);

/// Counts and times every request by method, route template and status. Outermost,
/// so the time covers every layer and the status is the one the client gets. The
/// route is the template (`/mail/{mailbox}/messages/{id}`), never the path, which can
/// carry ids and tokens; a static file is `/static/{file}`, and a request that matched
/// no route `unmatched`.
pub async fn http_figures(
    State(metrics): State<crate::metrics::Metrics>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let static_file = request.uri().path().starts_with("/static/");
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let route = match slot.0.get() {
        Some(route) => route.as_str(),
        // the files are a nested service, which the routes' layer does not see
        None if static_file => "/static/{file}",
        None => "unmatched",
    };
    metrics.http(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Notes the matched route's template in the request's [`RouteSlot`] (applied to the
/// routes, where the template is known).
pub async fn note_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        request.extensions().get::<RouteSlot>(),
        request.extensions().get::<axum::extract::MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(request).await
}
