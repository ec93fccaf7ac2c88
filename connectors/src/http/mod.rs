//! HTTP triggers: Lambda's function URL payload format 2.0, for requests in and results out,
//! and the webhook signatures a request must carry before it becomes an event.
//!
//! The broker owns the server; this module owns the shapes, so that every HTTP-facing
//! component encodes events and decodes results the same way (SEMANTICS.md §3).

#[cfg(test)]
mod proptests;
mod request;
mod response;
pub mod webhook;

pub use request::{encode_request, HttpRequest};
pub use response::{decode_response, HttpReply, ResponseError};
