//! `_method` overrides: Rails (`Rack::MethodOverride`), Laravel and Symfony serve a POST whose
//! query or body has `_method=DELETE` as a DELETE, a method the route's method list may not
//! allow or may leave to another route. On routes with a method list, whose upstream may honour
//! them (`method_overrides`), the gateway refuses such requests (400): a `_method` parameter in
//! the query, and, in the body of a POST, a `_method` field of a form (urlencoded, or without a
//! content type, which Rack parses as a form), of a `multipart/form-data` body or of a JSON
//! object (Laravel reads JSON bodies as input). Names are compared as PHP reads them: leading
//! spaces dropped, `.` and space read as `_`, an array suffix (`_method[]`) ignored, any case.

/// Where a `_method` override was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MethodOverride {
    /// `?_method=...`.
    #[error("the query has a _method parameter, which Rails, Laravel and Symfony read as the request's method: send the method itself")]
    Query,
    /// A `_method` field in a POST's body.
    #[error("the request body has a _method field, which Rails, Laravel and Symfony read as the request's method: send the method itself")]
    Body,
}

/// How a POST's body is read for a `_method` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// `application/x-www-form-urlencoded`, or no `Content-Type` at all.
    UrlEncoded,
    /// `multipart/form-data`.
    Multipart,
    /// `application/json`, `…/json`, `…+json`.
    Json,
}

/// Whether `name`, as sent (still percent-encoded, `+` for space), is `_method` to PHP, Rack or
/// Symfony.
fn is_override_name(name: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(n, _)| n.into_owned())
        .unwrap_or_default();
    is_override_decoded(&decoded)
}

/// [`is_override_name`] for a name already decoded.
fn is_override_decoded(name: &str) -> bool {
    let name = name.trim_start_matches(' ');
    let base = name.split('[').next().unwrap_or_default();
    base.len() == 7
        && base
            .bytes()
            .map(|b| if b == b'.' || b == b' ' { b'_' } else { b })
            .zip(b"_method".iter())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// `Err` when the query (or a urlencoded body) has a `_method` parameter; `&` and `;` both
/// separate parameters.
fn in_pairs(text: &str) -> bool {
    text.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        !name.is_empty() && is_override_name(name)
    })
}

/// `Err` when the query has a `_method` parameter.
pub fn in_query(query: Option<&str>) -> Result<(), MethodOverride> {
    match query {
        Some(q) if in_pairs(q) => Err(MethodOverride::Query),
        _ => Ok(()),
    }
}

/// How the body of a request with `method` and `content_type` must be read for a `_method`
/// field, `None` when no framework reads one there (not a POST, or another content type).
pub fn body_form(method: &http::Method, content_type: Option<&[u8]>) -> Option<BodyForm> {
    if method != http::Method::POST {
        return None;
    }
    let Some(ct) = content_type else {
        return Some(BodyForm::UrlEncoded);
    };
    let media = ct
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let media = String::from_utf8_lossy(media).to_ascii_lowercase();
    if media.is_empty() || media == "application/x-www-form-urlencoded" {
        Some(BodyForm::UrlEncoded)
    } else if media == "multipart/form-data" {
        Some(BodyForm::Multipart)
    } else if media.contains("/json") || media.contains("+json") {
        Some(BodyForm::Json)
    } else {
        None
    }
}

/// `Err` when `body`, read as `form`, has a `_method` field. A multipart body is searched for
/// any `Content-Disposition` line naming `_method`, whatever its boundary (a lenient parser's
/// view of the parts is not the gateway's to guess); a JSON body for a top-level `_method` key.
/// A body that does not parse has no field.
pub fn in_body(form: BodyForm, body: &[u8]) -> Result<(), MethodOverride> {
    let found = match form {
        BodyForm::UrlEncoded => in_pairs(&String::from_utf8_lossy(body)),
        BodyForm::Multipart => body
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let line = line.trim_ascii();
                let colon = line.iter().position(|b| *b == b':')?;
                let (name, value) = line.split_at(colon);
                name.trim_ascii()
                    .eq_ignore_ascii_case(b"content-disposition")
                    .then_some(value.get(1..).unwrap_or_default())
            })
            .any(disposition_names_override),
        BodyForm::Json => serde_json::from_slice::<
            std::collections::BTreeMap<String, serde::de::IgnoredAny>,
        >(body)
        .is_ok_and(|keys| keys.keys().any(|k| is_override_decoded(k))),
    };
    if found {
        Err(MethodOverride::Body)
    } else {
        Ok(())
    }
}

/// Whether a `Content-Disposition` value (`form-data; name="_method"`) names `_method`.
fn disposition_names_override(value: &[u8]) -> bool {
    String::from_utf8_lossy(value).split(';').any(|param| {
        let Some((key, v)) = param.split_once('=') else {
            return false;
        };
        let key = key.trim();
        (key.eq_ignore_ascii_case("name") || key.eq_ignore_ascii_case("name*"))
            && is_override_decoded(v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_overrides_under_every_spelling_php_reads() {
        for q in [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "a=1;_method=PUT",
            "_METHOD=DELETE",
            "%5Fmethod=DELETE",
            "_%6Dethod=DELETE",
            ".method=DELETE",
            "+_method=DELETE",
            "%20%20_method=DELETE",
            "_method[]=DELETE",
            "_method[x]=DELETE",
            "_method",
        ] {
            assert_eq!(in_query(Some(q)), Err(MethodOverride::Query), "{q}");
        }
        for q in [
            "method=DELETE",
            "x_method=DELETE",
            "_methods=DELETE",
            "a=_method",
            // PHP drops leading spaces before it reads the others as `_`: these are `method`.
            "+method=DELETE",
            "%20method=DELETE",
            "q=%26_method%3DDELETE",
            "",
        ] {
            assert_eq!(in_query(Some(q)), Ok(()), "{q}");
        }
        assert_eq!(in_query(None), Ok(()));
    }

    #[test]
    fn bodies_that_frameworks_read_for_a_method() {
        let post = http::Method::POST;
        let cases: [(Option<&[u8]>, Option<BodyForm>); 8] = [
            (None, Some(BodyForm::UrlEncoded)),
            (
                Some(b"application/x-www-form-urlencoded; charset=utf-8"),
                Some(BodyForm::UrlEncoded),
            ),
            (
                Some(b"Multipart/Form-Data; boundary=x"),
                Some(BodyForm::Multipart),
            ),
            (Some(b"application/json"), Some(BodyForm::Json)),
            (Some(b"application/vnd.api+json"), Some(BodyForm::Json)),
            (Some(b"text/plain"), None),
            (Some(b"application/octet-stream"), None),
            (Some(b""), Some(BodyForm::UrlEncoded)),
        ];
        for (ct, want) in cases {
            assert_eq!(body_form(&post, ct), want, "{ct:?}");
        }
        assert_eq!(body_form(&http::Method::PUT, None), None);
        assert_eq!(body_form(&http::Method::GET, None), None);
    }

    #[test]
    fn body_fields() {
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--b\r\ncontent-disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n";
        let file = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"_method\"\r\n\r\nx\r\n--b--\r\n";
        for (form, body, found) in [
            (BodyForm::UrlEncoded, "a=1&_method=DELETE", true),
            (BodyForm::UrlEncoded, "_method=PATCH", true),
            (BodyForm::UrlEncoded, "a=1&b=_method", false),
            (BodyForm::Multipart, multipart, true),
            (BodyForm::Multipart, &multipart.replace("\r\n", "\n"), true),
            (
                BodyForm::Multipart,
                &multipart.replace("name=\"_method\"", "name=_method"),
                true,
            ),
            (BodyForm::Multipart, file, false),
            (
                BodyForm::Json,
                r#"{"amount": 1, "_method": "DELETE"}"#,
                true,
            ),
            (BodyForm::Json, r#"{"_METHOD": "DELETE"}"#, true),
            (BodyForm::Json, r#"{"a": {"_method": "DELETE"}}"#, false),
            (BodyForm::Json, r#"[{"_method": "DELETE"}]"#, false),
            (BodyForm::Json, "not json", false),
        ] {
            assert_eq!(in_body(form, body.as_bytes()).is_err(), found, "{body}");
        }
    }
}
