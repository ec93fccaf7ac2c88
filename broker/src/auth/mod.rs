//! Who may call Impulse: request authentication.

#[allow(dead_code, reason = "wired into the Invoke API by the lead (issue 15)")]
pub(crate) mod sigv4;
