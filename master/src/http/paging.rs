//! Pages of a listing: `?limit=&after=` in, a JSON array out, and a
//! `Link: <…>; rel="next"` header while more remain.

use super::{error, ApiResult};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drqueue_common::listing::{DEFAULT_PAGE, MAX_PAGE};
use serde::Serialize;

/// `limit`: rows per page (default 1,000, at most 10,000).
pub(super) fn limit(given: Option<&str>) -> Result<usize, Response> {
    let Some(text) = given else {
        return Ok(DEFAULT_PAGE);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            format!("limit {text:?}: give a number from 1 to {MAX_PAGE}"),
        )),
    }
}

/// `after`: the cursor of the last row seen (a job id, a task index).
pub(super) fn after<T: std::str::FromStr>(given: Option<&str>) -> Result<Option<T>, Response> {
    given
        .map(|text| {
            text.parse().map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("after {text:?}: give the id of the last row you have (a number)"),
                )
            })
        })
        .transpose()
}

/// The rows as a JSON array; when `more`, a link to the page after `last`
/// (the same query, its `after` replaced).
pub(super) fn page<T: Serialize>(
    uri: &Uri,
    rows: &[T],
    more: bool,
    last: Option<String>,
) -> ApiResult {
    let mut resp = Json(rows).into_response();
    if let (true, Some(last)) = (more, last) {
        let kept: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("after="))
            .collect();
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        let link = format!("<{}?{query}after={last}>; rel=\"next\"", uri.path());
        let value = link
            .parse()
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "bad Link header"))?;
        resp.headers_mut().insert(header::LINK, value);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_query_and_moves_after() {
        let uri: Uri = "/api/jobs/1/tasks?status=done&after=10&limit=2"
            .parse()
            .unwrap();
        let resp = page(&uri, &[1, 2], true, Some("12".into())).unwrap();
        let link = resp.headers()[header::LINK].to_str().unwrap();
        assert_eq!(
            link,
            r#"</api/jobs/1/tasks?status=done&limit=2&after=12>; rel="next""#
        );
        let resp = page(&uri, &[1, 2], false, Some("12".into())).unwrap();
        assert!(resp.headers().get(header::LINK).is_none());
        assert!(limit(Some("0")).is_err() && limit(Some("x")).is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_PAGE);
    }
}
