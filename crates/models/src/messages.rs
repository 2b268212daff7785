//! Docker's error body and the JSON messages of its progress streams (pull, push, load, import,
//! build).

use serde::{Deserialize, Serialize};

/// Every error's body: `{"message": "…"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorResponse {
    pub message: String,
}

/// One line of a progress stream (Docker's `jsonmessage.JSONMessage`): only what is set is
/// written, in Docker's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JsonMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "progressDetail", default, skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "errorDetail", default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProgressDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// A failed build step's exit code, as dockerd reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub message: String,
}

impl JsonMessage {
    /// A line of output (`{"stream": …}`).
    pub fn stream(text: impl Into<String>) -> JsonMessage {
        JsonMessage { stream: Some(text.into()), ..Default::default() }
    }

    /// A status line (`{"status": …}`).
    pub fn status(text: impl Into<String>) -> JsonMessage {
        JsonMessage { status: Some(text.into()), ..Default::default() }
    }

    /// A failure inside the stream, as SDKs look for it (`errorDetail` and `error`).
    pub fn error(message: impl Into<String>) -> JsonMessage {
        let message = message.into();
        JsonMessage { error_detail: Some(ErrorDetail { code: None, message: message.clone() }), error: Some(message), ..Default::default() }
    }
}
