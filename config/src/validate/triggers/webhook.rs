//! `[triggers.<name>.webhook]`: a secret in the form its scheme's senders issue, and a replay
//! window the verifier can keep.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::env::trigger_webhook_secret_var;
use crate::locate::FieldPath;
use crate::model::WebhookConfig;
use crate::validate::Validator;

/// The shortest replay window: a second, the resolution of the signed timestamps.
const MIN_TOLERANCE: Duration = Duration::from_secs(1);
/// The longest replay window: an hour, beyond which a captured request stays usable too long
/// and the remembered deliveries grow with it.
const MAX_TOLERANCE: Duration = Duration::from_secs(60 * 60);

impl Validator {
    /// Validates trigger `name`'s `webhook` table at `path`.
    pub(super) fn webhook(&mut self, path: &FieldPath, name: &str, webhook: &WebhookConfig) {
        match &webhook.secret {
            None => self.error(
                path.key("secret"),
                format!(
                    "missing; set the {} secret here or in the environment variable {}",
                    webhook.scheme.as_str(),
                    trigger_webhook_secret_var(name)
                ),
            ),
            Some(secret) => {
                // The message never contains the secret: `signing_key` promises it.
                if let Err(message) = webhook.scheme.signing_key(secret.expose_secret()) {
                    self.error(path.key("secret"), message);
                }
            }
        }
        self.duration(
            path.key("tolerance"),
            webhook.tolerance,
            MIN_TOLERANCE,
            MAX_TOLERANCE,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use crate::{parse, Format, TriggerConfig, WebhookScheme};

    fn config(webhook: &str) -> String {
        format!(
            r#"
[functions.f]
target = {{ type = "http", endpoint = "http://localhost:9000" }}

[triggers.hook]
type = "http"
function = "f"
path = "/hook"

[triggers.hook.webhook]
{webhook}
"#
        )
    }

    fn errors(text: &str, env: &HashMap<String, String>) -> Vec<String> {
        match parse(text, Format::Toml, "w.toml", env) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn webhook_of(text: &str, env: &HashMap<String, String>) -> crate::WebhookConfig {
        let config = parse(text, Format::Toml, "w.toml", env).unwrap_or_else(|e| panic!("{e}"));
        match &config.triggers["hook"] {
            TriggerConfig::Http(http) => http.webhook.clone().expect("webhook configured"),
            other => panic!("not http: {other:?}"),
        }
    }

    /// The Standard Webhooks test vector's secret (its spec and libraries publish it).
    const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn each_scheme_parses_with_the_default_tolerance() {
        for (scheme, secret) in [
            ("standard-webhooks", SVIX_SECRET),
            ("github", "It's a Secret to Everybody"),
            ("stripe", "whsec_0123456789abcdefABCDEF"),
        ] {
            let text = config(&format!("scheme = \"{scheme}\"\nsecret = \"{secret}\""));
            let webhook = webhook_of(&text, &HashMap::new());
            assert_eq!(webhook.scheme.as_str(), scheme);
            assert_eq!(webhook.tolerance.as_secs(), 300);
            assert_eq!(
                webhook.secret.as_ref().map(|s| s.expose_secret()),
                Some(secret)
            );
        }
    }

    #[test]
    fn keys_follow_each_sender() {
        // Standard Webhooks: the base64 after `whsec_`, decoded.
        let key = WebhookScheme::StandardWebhooks
            .signing_key(SVIX_SECRET)
            .expect("valid");
        assert_eq!(key.len(), 24);
        // Stripe: the whole string, prefix included, as bytes.
        let stripe = "whsec_0123456789abcdefABCDEF";
        assert_eq!(
            WebhookScheme::Stripe.signing_key(stripe).expect("valid"),
            stripe.as_bytes()
        );
        // Padding is optional in a Standard Webhooks secret (32 bytes need one `=`).
        let padded = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(
            WebhookScheme::StandardWebhooks.signing_key(padded),
            WebhookScheme::StandardWebhooks.signing_key(unpadded)
        );
    }

    #[test]
    fn bad_secrets_and_tolerances_name_file_line_and_field() {
        let cases = [
            (
                "scheme = \"standard-webhooks\"\nsecret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
                "w.toml:12: triggers.hook.webhook.secret: must start with `whsec_` (a Standard Webhooks secret)",
            ),
            (
                "scheme = \"standard-webhooks\"\nsecret = \"whsec_not*base64!canary\"",
                "w.toml:12: triggers.hook.webhook.secret: after `whsec_`, must be standard base64 (a Standard Webhooks secret)",
            ),
            (
                // 12 bytes.
                "scheme = \"standard-webhooks\"\nsecret = \"whsec_AAAAAAAAAAAAAAAA\"",
                "w.toml:12: triggers.hook.webhook.secret: must encode 24 to 64 bytes after `whsec_` (it encodes 12)",
            ),
            (
                "scheme = \"github\"\nsecret = \"short-canary\"",
                "w.toml:12: triggers.hook.webhook.secret: must be at least 16 characters (e.g. `openssl rand -hex 32`)",
            ),
            (
                "scheme = \"stripe\"\nsecret = \"sk_live_canary0123456789abcdef\"",
                "w.toml:12: triggers.hook.webhook.secret: must start with `whsec_` (the endpoint's signing secret, not an API key)",
            ),
            (
                "scheme = \"stripe\"\nsecret = \"whsec_canary\"",
                "w.toml:12: triggers.hook.webhook.secret: must be `whsec_` and at least 16 letters and digits, as Stripe shows it",
            ),
            (
                "scheme = \"github\"\nsecret = \"0123456789abcdef-canary\"\ntolerance = \"2h\"",
                "w.toml:13: triggers.hook.webhook.tolerance: must be between 1s and 1h",
            ),
            (
                "scheme = \"github\"\nsecret = \"0123456789abcdef-canary\"\ntolerance = \"500ms\"",
                "w.toml:13: triggers.hook.webhook.tolerance: must be between 1s and 1h",
            ),
            (
                "scheme = \"gitlab\"\nsecret = \"0123456789abcdef-canary\"",
                "w.toml:11: triggers.hook.webhook.scheme: unknown variant `gitlab`, expected one of `standard-webhooks`, `github`, `stripe`",
            ),
            (
                "scheme = \"github\"\nsecret = \"0123456789abcdef-canary\"\nalgorithm = \"sha1\"",
                "w.toml:13: triggers.hook.webhook.algorithm: unknown field `algorithm`, expected one of `scheme`, `secret`, `tolerance`",
            ),
        ];
        for (webhook, expected) in cases {
            let found = errors(&config(webhook), &HashMap::new());
            assert_eq!(found, [expected], "for {webhook:?}");
            assert!(
                found.iter().all(|line| !line.contains("canary")),
                "{found:?}"
            );
        }
    }

    #[test]
    fn the_secret_can_come_from_the_environment_and_must_come_from_somewhere() {
        let text = config("scheme = \"github\"");
        let found = errors(&text, &HashMap::new());
        assert_eq!(
            found,
            [
                "w.toml:10: triggers.hook.webhook.secret: missing; set the github secret here \
                 or in the environment variable IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET"
            ]
        );

        let var = crate::trigger_webhook_secret_var("hook");
        assert_eq!(var, "IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET");
        let env = HashMap::from([(var.clone(), "from-the-environment-0123".to_owned())]);
        let webhook = webhook_of(&text, &env);
        assert_eq!(
            webhook.secret.as_ref().map(|s| s.expose_secret()),
            Some("from-the-environment-0123")
        );

        // The environment wins over the file; its problems name the variable, not the value.
        let text = config("scheme = \"github\"\nsecret = \"0123456789abcdef-file\"");
        let env = HashMap::from([(var.clone(), "canary".to_owned())]);
        let found = errors(&text, &env);
        assert_eq!(
            found,
            ["environment variable IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET: \
              triggers.hook.webhook.secret: must be at least 16 characters (e.g. `openssl rand -hex 32`)"]
        );
    }

    #[test]
    fn the_environment_secret_needs_a_webhook_table() {
        let text = r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:9000" }

[triggers.hook]
type = "http"
function = "f"
path = "/hook"
"#;
        let env = HashMap::from([(
            "IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET".to_owned(),
            "0123456789abcdef-canary".to_owned(),
        )]);
        let found = errors(text, &env);
        assert_eq!(
            found,
            [
                "environment variable IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET: triggers.hook: trigger \
              \"hook\" has no [triggers.hook.webhook] table; declare its scheme there"
            ]
        );
    }

    #[test]
    fn debug_and_serialisation_redact_the_secret() {
        let text = config("scheme = \"github\"\nsecret = \"0123456789abcdef-canary\"");
        let config =
            parse(&text, Format::Toml, "w.toml", &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("canary"), "{debug}");
        let json = serde_json::to_string(&config).expect("serialisable");
        assert!(!json.contains("canary"), "{json}");
        assert!(json.contains(r#""secret":"***""#), "{json}");
    }
}
