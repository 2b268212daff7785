//! API requests as clients send them: query strings (filters, integers, booleans) and JSON
//! bodies of a container create and an exec, through the engine's create-time checks. Never a
//! panic (a bad request is a 400).
#![no_main]

use berth_api::containers::{CreateBody, ExecConfig};
use berth_api::params::{Query, json_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = json_body::<CreateBody>(data) {
        let _ = berth_engine::check_create(&body);
    }
    let _ = json_body::<ExecConfig>(data);
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(uri) = format!("/containers/json?{s}").parse::<http::Uri>()
    {
        let q = Query::parse(&uri);
        let _ = q.filters();
        let _ = q.int("limit");
        let _ = q.bool("all");
    }
});
