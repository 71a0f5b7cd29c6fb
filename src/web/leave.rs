//! `/leave?to=<url>`: the page between a link in a clinical document (or a public
//! health agency's requested action) and the site it points to. It shows the whole
//! address and the site's name before the user goes on, and refuses anything but
//! `http` and `https` (no `javascript:`, `data:`, `file:`…), so a document can neither
//! run code through a link nor send the user somewhere they did not see.
//!
//! It is a signed-in page, so it is no open redirect for anyone else. Links in the
//! document frame open it in a new window from a sandboxed (opaque-origin) frame, and
//! browsers do not send `SameSite=Strict` cookies on a navigation that such a frame
//! starts. Rather than send the user to the sign-in page (whose new session cookie
//! would replace the one their other tabs use), a request without a session gets a
//! page that asks for the same address again: that request starts from our own page,
//! so the cookie goes with it. Only if the second request (`&again=1`) has no session
//! either is the user sent to sign in.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/leave", get(leave))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeaveQuery {
    to: String,
    again: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "leave.html")]
struct LeavePage {
    chrome: Chrome,
    /// The address, as the browser will read it (a host in Unicode shown as punycode,
    /// so look-alike letters show).
    url: String,
    host: String,
}

/// The page that asks for the same address again, from our own origin.
#[derive(Template, WebTemplate)]
#[template(path = "leave_again.html")]
struct AgainPage {
    again: String,
}

async fn leave(
    current: Result<CurrentUser, Response>,
    Query(q): Query<LeaveQuery>,
) -> AppResult<Response> {
    let current = match current {
        Ok(current) => current,
        Err(to_sign_in) if !q.again.is_empty() => return Ok(to_sign_in),
        Err(_) => {
            let again = format!(
                "/leave?to={}&again=1",
                url::form_urlencoded::byte_serialize(q.to.as_bytes()).collect::<String>()
            );
            return Ok(AgainPage { again }.into_response());
        }
    };
    let url = outside_address(&q.to).ok_or_else(|| {
        AppError::BadRequest(
            "This link was not followed: only web addresses (starting with http:// or \
             https://) are opened from a document."
                .into(),
        )
    })?;
    Ok(LeavePage {
        chrome: current.chrome,
        host: url.host_str().unwrap_or_default().to_owned(),
        url: url.to_string(),
    }
    .into_response())
}

/// `to` as a web address with a host and no user name or password (which can make an
/// address read as another site's: `https://bank.example@evil.example/`).
fn outside_address(to: &str) -> Option<url::Url> {
    let url = url::Url::parse(to.trim()).ok()?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.username().is_empty()
        && url.password().is_none();
    ok.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::outside_address;

    #[test]
    fn only_web_addresses_without_credentials_are_followed() {
        assert_eq!(
            outside_address(" https://example.org/a?b=1 ").map(String::from),
            Some("https://example.org/a?b=1".to_owned())
        );
        assert_eq!(
            outside_address("https://bücher.example/").map(String::from),
            Some("https://xn--bcher-kva.example/".to_owned())
        );
        for refused in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "mailto:a@example.org",
            "https://bank.example@evil.example/",
            "/mail",
            "",
        ] {
            assert!(outside_address(refused).is_none(), "{refused}");
        }
    }
}
