//! The function registry: each configured function's composed service stack.

use std::collections::HashMap;
use std::sync::Arc;

use impulse_config::{Config, TargetConfig};
use impulse_invoker::http::HttpFunction;
use impulse_invoker::{DeadlineLayer, FunctionService, MetricsLayer};
use tower::ServiceBuilder;

/// A callable function.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    /// The configured name.
    pub(crate) name: Arc<str>,
    /// The stack: metrics → deadline → target. (The limiter, retries and dead-lettering
    /// will sit between metrics and deadline, so metrics see every attempt.)
    pub(crate) service: FunctionService,
}

/// Every configured function, by name.
#[derive(Debug, Default)]
pub(crate) struct Functions {
    by_name: HashMap<String, Function>,
}

impl Functions {
    /// Builds every function's stack. All functions share one HTTP connection pool.
    ///
    /// Returns every problem found, each prefixed with the config path it concerns.
    pub(crate) fn build(config: &Config) -> Result<Self, Vec<String>> {
        let client = HttpFunction::default_client();
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        for (name, function) in &config.functions {
            let target = match &function.target {
                TargetConfig::Http(http) => match HttpFunction::new(client.clone(), &http.endpoint)
                {
                    Ok(target) => target,
                    Err(err) => {
                        errors.push(format!("functions.{name}.target.endpoint: {err}"));
                        continue;
                    }
                },
                TargetConfig::Process(_) => {
                    errors.push(format!(
                        "functions.{name}.target: process targets are not supported by this \
                         version of impulse yet; use an http target"
                    ));
                    continue;
                }
            };
            let service = ServiceBuilder::new()
                .layer(MetricsLayer)
                .layer(DeadlineLayer::new(function.timeout))
                .service(target);
            let function = Function {
                name: Arc::from(name.as_str()),
                service: FunctionService::new(service),
            };
            by_name.insert(name.clone(), function);
        }
        if errors.is_empty() {
            Ok(Self { by_name })
        } else {
            Err(errors)
        }
    }

    /// The function called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Function> {
        self.by_name.get(name)
    }
}
