//! `GET /api/v1/probes/{name}/screenshots/{file}`: a browser check's
//! failure screenshot, as the run's `browser.screenshot` links it.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::known_probe;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::config::probe::is_safe_name;
use crate::probe::browser::shots;

/// The PNG of a failed browser step (kept: the newest `browser.screenshots_per_probe` per probe).
#[utoipa::path(get, path = "/api/v1/probes/{name}/screenshots/{file}", tag = "probes",
    params(("name" = String, Path, description = "probe name"),
           ("file" = String, Path, description = "`<run id>-<attempt>.png`, as the run's `browser.screenshot` gives it")),
    responses((status = 200, description = "image/png", content_type = "image/png"), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn screenshot(
    State(core): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !is_safe_name(&name) || !shots::is_file_name(&file) {
        return Err(ApiError::not_found(format!(
            "{name}/{file} is not a screenshot: the file is named <run id>-<attempt>.png, as the run's browser.screenshot links it"
        )));
    }
    known_probe(&core, &name).await?;
    let path = shots::path(&core.settings.browser, &name, &file);
    match tokio::fs::read(&path).await {
        Ok(png) => Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response()),
        Err(_) => Err(ApiError::not_found(format!(
            "probe {name:?} has no screenshot {file}: only the newest browser.screenshots_per_probe are kept, on the replica that ran the check"
        ))),
    }
}
