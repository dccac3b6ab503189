//! HTTP from scripts: a blocking client (no async runtime in every worker) over rustls. Redirects
//! are followed here, not by the client, so every hop is checked against `--allow-net`.

use std::{sync::Arc, time::Duration};

use rhai::{Blob, Dynamic, Engine, Map};
use ureq::http::{Method, Request, Uri};

use super::{Result, invalid, method, script_error};
use crate::permissions::Permissions;

/// Redirects followed before a request fails.
const MAX_REDIRECTS: usize = 10;
/// How long a request may take by default, connecting and reading included.
const DEFAULT_TIMEOUT: f64 = 30.0;
/// The largest response body read.
const MAX_BODY: u64 = 256 << 20;

pub(super) fn register(engine: &mut Engine, permissions: &Arc<Permissions>) {
    let p = permissions.clone();
    method(engine, "http_get", move |url: &str| {
        request(&p, Call::get(url, &Map::new())?)
    });
    let p = permissions.clone();
    method(engine, "http_get", move |url: &str, options: Map| {
        request(&p, Call::get(url, &options)?)
    });
    let p = permissions.clone();
    method(engine, "http_request", move |options: Map| {
        request(&p, Call::from_map(&options)?)
    });
}

/// One request as a script asked for it.
struct Call {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl Call {
    fn get(url: &str, options: &Map) -> Result<Call> {
        let mut map = options.clone();
        map.insert("url".into(), url.into());
        map.insert("method".into(), "GET".into());
        Call::from_map(&map)
    }

    fn from_map(map: &Map) -> Result<Call> {
        let text = |name: &str| map.get(name).map(|v| v.to_string());
        let url = text("url").ok_or_else(|| invalid("http_request needs a `url`"))?;
        let method = text("method")
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| invalid(format!("{method:?} is not an HTTP method")))?;
        let headers = match map.get("headers") {
            None => Vec::new(),
            Some(h) => h
                .read_lock::<Map>()
                .ok_or_else(|| invalid("`headers` must be a map of names to values"))?
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let body = match map.get("body") {
            None => Vec::new(),
            Some(b) if b.is_unit() => Vec::new(),
            Some(b) => match b.read_lock::<Blob>() {
                Some(blob) => blob.clone(),
                None => b.to_string().into_bytes(),
            },
        };
        let timeout = match map.get("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(t) => t
                .as_float()
                .or_else(|_| t.as_int().map(|i| i as f64))
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| invalid("`timeout` must be a number of seconds above 0"))?,
        };
        Ok(Call {
            method,
            url,
            headers,
            body,
            timeout: Duration::from_secs_f64(timeout),
        })
    }
}

/// Sends `call`, following redirects (each checked), and answers `#{status, headers, body}`: the
/// body a string when it is UTF-8, else a blob. A status of 400 or more is an answer, not an error.
fn request(permissions: &Permissions, mut call: Call) -> Result<Dynamic> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(call.timeout))
        .build()
        .into();
    let first = call.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let uri: Uri = call
            .url
            .parse()
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", call.url)))?;
        check(permissions, &uri)?;
        let mut response = send(&agent, &call, &uri)?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        if let (300..=399, Some(location)) = (status, location) {
            call.url = resolve(&uri, &location);
            if matches!(status, 301..=303) && call.method != Method::HEAD {
                call.method = Method::GET;
                call.body.clear();
            }
            continue;
        }
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.insert(name.as_str().to_ascii_lowercase().into(), value.into());
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| invalid(format!("reading the response from {}: {e}", call.url)))?;
        let body = match String::from_utf8(bytes) {
            Ok(text) => Dynamic::from(text),
            Err(e) => Dynamic::from_blob(e.into_bytes()),
        };
        let mut result = Map::new();
        result.insert("status".into(), (status as rhai::INT).into());
        result.insert("headers".into(), headers.into());
        result.insert("body".into(), body);
        result.insert("url".into(), call.url.clone().into());
        return Ok(result.into());
    }
    Err(invalid(format!(
        "{first}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// The host and port `uri` reaches must be granted.
fn check(permissions: &Permissions, uri: &Uri) -> Result<()> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(invalid(format!(
                "{uri}: only http and https URLs can be fetched"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri}: the URL names no host")))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    permissions.check_net(host, port).map_err(script_error)
}

fn send(agent: &ureq::Agent, call: &Call, uri: &Uri) -> Result<ureq::http::Response<ureq::Body>> {
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(uri.clone());
    for (name, value) in &call.headers {
        builder = builder.header(name, value);
    }
    let failed = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => invalid(format!(
            "{}: timed out after {}s",
            call.url,
            call.timeout.as_secs_f64()
        )),
        e => invalid(format!("{}: {e}", call.url)),
    };
    let bad = |e: ureq::http::Error| invalid(format!("{}: {e}", call.url));
    if call.body.is_empty() {
        agent.run(builder.body(()).map_err(bad)?).map_err(failed)
    } else {
        agent
            .run(builder.body(call.body.clone()).map_err(bad)?)
            .map_err(failed)
    }
}

/// Where a redirect's `Location` leads from `base`.
fn resolve(base: &Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map_or("", |a| a.as_str())
    );
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{origin}{dir}{location}")
}
