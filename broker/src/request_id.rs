//! Request ids: random UUIDs, as Lambda's are.

/// A fresh request id, hyphenated lower case. Written through uuid's encoder into a buffer
/// rather than through `Display`: one id per Kafka event, on the hot path.
pub(crate) fn new() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hyphenated_lower_case_v4_uuids_and_differ() {
        let id = super::new();
        let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id, parsed.hyphenated().to_string());
        assert_ne!(id, super::new());
    }
}
