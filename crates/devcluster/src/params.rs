//! Query parameters and path segments as the real API server reads them: percent-decoding, and
//! the list/watch parameters checked (`limit`, `resourceVersion`, `resourceVersionMatch`,
//! `timeoutSeconds`) with a 400 naming the parameter instead of being ignored.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Uri;

use crate::status::ApiError;

/// The query string's parameters, percent-decoded (`+` is a space, as in forms).
pub(crate) fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    Some((decode(k, true)?, decode(v, true)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A path segment, percent-decoded (`+` stays a plus); `None` when it isn't valid UTF-8 or
/// escapes.
pub(crate) fn path_segment(text: &str) -> Option<String> {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a boolean parameter is set.
pub(crate) fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// The real server's checks of a list or watch's parameters.
pub(crate) fn check_list(params: &HashMap<String, String>) -> Result<(), ApiError> {
    if let Some(limit) = params.get("limit").filter(|l| !l.is_empty())
        && limit.parse::<i64>().map_or(true, |l| l < 0)
    {
        return Err(ApiError::bad_request(format!(
            "limit: Invalid value: \"{limit}\": must be a non-negative integer"
        )));
    }
    let version = params.get("resourceVersion").filter(|v| !v.is_empty());
    if let Some(version) = version
        && version.parse::<u64>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "resourceVersion: Invalid value: \"{version}\": must be a non-negative integer"
        )));
    }
    match params
        .get("resourceVersionMatch")
        .map(String::as_str)
        .filter(|m| !m.is_empty())
    {
        None => {}
        Some("NotOlderThan" | "Exact") if version.is_some() => {}
        Some("NotOlderThan" | "Exact") => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless \
                 resourceVersion is provided",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \
                 \"Exact\", \"NotOlderThan\""
            )));
        }
    }
    Ok(())
}

/// How long a watch lasts without `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_mins(30);

/// A watch's `timeoutSeconds`: an int64, as the real server parses it (anything else is a 400
/// naming the parameter); a negative one ends the watch at once.
pub(crate) fn watch_timeout(params: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let Some(text) = params.get("timeoutSeconds").filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_WATCH_TIMEOUT);
    };
    let seconds = text.parse::<i64>().map_err(|error| {
        ApiError::bad_request(format!(
            "timeoutSeconds: Invalid value: \"{text}\": strconv.ParseInt: parsing \"{text}\": {}",
            match error.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow =>
                    "value out of range",
                _ => "invalid syntax",
            }
        ))
    })?;
    Ok(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn list_parameters_of_the_wrong_form_name_the_parameter() {
        for (pairs, parameter) in [
            (&[("limit", "x")][..], "limit"),
            (&[("limit", "-1")][..], "limit"),
            (&[("resourceVersion", "abc")][..], "resourceVersion"),
            (
                &[("resourceVersionMatch", "Exact")][..],
                "resourceVersionMatch",
            ),
            (
                &[("resourceVersion", "5"), ("resourceVersionMatch", "Newest")][..],
                "resourceVersionMatch",
            ),
        ] {
            let error = check_list(&params(pairs)).expect_err("refused");
            let message = error.body["message"].as_str().unwrap_or_default();
            assert_eq!(error.code, 400);
            assert!(message.starts_with(parameter), "{pairs:?}: {message}");
        }
        for pairs in [
            &[("limit", "0")][..],
            &[("limit", "500"), ("resourceVersion", "")][..],
            &[
                ("resourceVersion", "7"),
                ("resourceVersionMatch", "NotOlderThan"),
            ][..],
        ] {
            assert!(check_list(&params(pairs)).is_ok(), "{pairs:?}");
        }
    }

    #[test]
    fn path_segments_are_percent_decoded_but_a_plus_stays() {
        assert_eq!(path_segment("my%2Dname").as_deref(), Some("my-name"));
        assert_eq!(path_segment("a+b").as_deref(), Some("a+b"));
        assert_eq!(path_segment("bad%2"), None);
        assert_eq!(path_segment("%ff"), None);
        let uri: Uri = "/x?labelSelector=a%3Db&q=a+b".parse().expect("uri");
        let parsed = query(&uri);
        assert_eq!(parsed["labelSelector"], "a=b");
        assert_eq!(parsed["q"], "a b");
    }
}
