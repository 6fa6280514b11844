//! Request bodies in (size limit, JSON or YAML) and responses out (JSON objects,
//! Status errors, streams).

use crate::api::status::ApiError;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde_json::Value;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Largest request body accepted (upstream's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The response body type: a whole buffer or a stream of chunks.
pub enum ResponseBody {
    /// A complete body.
    Full(Full<Bytes>),
    /// Chunks sent as they are produced (watch, logs).
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(f) => Pin::new(f).poll_frame(cx),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(f) => f.is_end_stream(),
            ResponseBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(f) => f.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// The response type of every handler.
pub type Resp = Response<ResponseBody>;

/// A response with bytes and a content type.
pub fn bytes_response(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(ResponseBody::Full(Full::new(body.into())));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json_response(code: StatusCode, v: &Value) -> Resp {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// A JSON response from already-encoded bytes.
pub fn json_bytes(code: StatusCode, b: impl Into<Bytes>) -> Resp {
    bytes_response(code, "application/json", b)
}

/// A plain-text response.
pub fn text_response(code: StatusCode, s: impl Into<String>) -> Resp {
    bytes_response(code, "text/plain; charset=utf-8", s.into())
}

/// A Status error response.
pub fn error_response(e: &ApiError) -> Resp {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(code, &e.to_status());
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes.
pub async fn read_body(body: Incoming, declared_len: Option<u64>) -> Result<Bytes, ApiError> {
    if declared_len.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

/// Decodes a JSON or YAML object body (by Content-Type; JSON when unsure).
pub fn decode_object(bytes: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the body of the request is empty"));
    }
    let base = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = if base.ends_with("yaml") {
        serde_yaml_ng::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if crate::api::protobuf::is_media_type(base) {
        // kubectl's typed clients (create configmap/deployment/namespace, run, ...) send
        // protobuf bodies; decode them into the JSON the rest of the pipeline works on.
        crate::api::protobuf::decode(bytes)
            .map_err(ApiError::bad_request)?
            .object
    } else if base.contains("cbor") || base.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            crate::api::protobuf::MEDIA_TYPE,
        ]));
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    };
    Ok(v)
}
