//! The operator's public-health reporting routes (`/reporting`): per jurisdiction,
//! the agency's Direct address (for eCR, APHL's AIMS address) and the document types
//! that go there. `directmail admin reporting …` does the same from scripts.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{Chrome, CurrentUser, flash};
use super::{AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::store::reporting::{self as store, Route};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/reporting", get(page).post(save))
        .route("/reporting/{id}/remove", post(remove))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RouteForm {
    jurisdiction: String,
    address: String,
    document_types: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/reporting.html")]
struct ReportingPage {
    chrome: Chrome,
    routes: Vec<Route>,
    form: RouteForm,
    errors: Vec<(&'static str, String)>,
}

impl ReportingPage {
    /// The form's fields: name, label, what was typed.
    fn fields(&self) -> Vec<(&'static str, &'static str, &str)> {
        vec![
            ("jurisdiction", "Jurisdiction", &self.form.jurisdiction),
            (
                "address",
                "Public-health Direct address",
                &self.form.address,
            ),
            (
                "document_types",
                "Document types (LOINC codes, comma separated)",
                &self.form.document_types,
            ),
        ]
    }

    fn error(&self, name: &str) -> &str {
        self.errors
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, why)| why.as_str())
            .unwrap_or("")
    }
}

async fn view(
    state: &AppState,
    current: CurrentUser,
    form: RouteForm,
    errors: Vec<(&'static str, String)>,
) -> AppResult<ReportingPage> {
    Ok(ReportingPage {
        chrome: current.chrome,
        routes: store::list(&state.db).await?,
        form,
        errors,
    })
}

async fn page(State(state): State<AppState>, current: CurrentUser) -> AppResult<ReportingPage> {
    current.require_operator()?;
    let form = RouteForm {
        document_types: directmail_content::cda::EICR_DOCUMENT_CODE.into(),
        ..RouteForm::default()
    };
    view(&state, current, form, Vec::new()).await
}

/// Adds a route, or changes the address and types of the jurisdiction's route.
async fn save(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    axum::Form(form): axum::Form<RouteForm>,
) -> AppResult<Response> {
    current.require_operator()?;
    let crate::reporting::CheckedRoute {
        jurisdiction,
        address,
        document_types: types,
    } = match crate::reporting::check_route(&form.jurisdiction, &form.address, &form.document_types)
    {
        Ok(checked) => checked,
        Err(errors) => {
            let page = view(&state, current, form, errors).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let id = store::upsert(&mut tx, &jurisdiction, &address, &types, now).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("reporting.route.save", format!("reporting-route:{id}"))
            .detail(format!("{jurisdiction}: {address}; {}", types.join(","))),
    )
    .await?;
    tx.commit().await?;
    flash(
        &current.session,
        format!("Reporting route for {jurisdiction} saved."),
    )
    .await?;
    Ok(Redirect::to("/reporting").into_response())
}

async fn remove(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let done = store::remove(&mut tx, id).await?;
    if done {
        audit::append(
            &mut tx,
            now,
            &current.actor(ip),
            Event::new("reporting.route.remove", format!("reporting-route:{id}")),
        )
        .await?;
    }
    tx.commit().await?;
    flash(
        &current.session,
        if done {
            "Reporting route removed."
        } else {
            "That route was already removed."
        },
    )
    .await?;
    Ok(Redirect::to("/reporting").into_response())
}
