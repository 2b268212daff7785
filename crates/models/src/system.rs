//! Events and registry credentials, from the Engine API's specification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `GET /events` message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventMessage {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// Registry credentials (`POST /auth`, and base64url JSON in `X-Registry-Auth`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub email: String,
    pub serveraddress: String,
    pub identitytoken: String,
    pub registrytoken: String,
}

/// `POST /auth`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthResponse {
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "IdentityToken", default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
}
