//! Notifications: webhooks (delivered from the durable outbox in SQLite)
//! and StatsD metrics.

pub mod statsd;
pub mod webhook;

use crate::config::jail::JailConfig;
use crate::config::notify::WebhookConfig;
use crate::store::outbox::NotifyRule;

/// Which webhook reports which jails: those listed in its `jails`, those
/// whose actions name it (`webhook[name=NAME]`), or, when neither is given,
/// every jail.
pub fn rules(hooks: &[WebhookConfig], jails: &[JailConfig]) -> Vec<NotifyRule> {
    hooks
        .iter()
        .map(|h| {
            let mut named: Vec<String> = jails
                .iter()
                .filter(|j| {
                    j.actions.iter().any(|a| {
                        a.name == "webhook"
                            && a.options.get("name").map(String::as_str) == Some(h.name.as_str())
                    })
                })
                .map(|j| j.name.clone())
                .collect();
            named.extend(h.jails.iter().cloned());
            NotifyRule {
                webhook: h.name.clone(),
                events: h.events.clone(),
                jails: (!named.is_empty()).then_some(named),
                matches: h.matches,
            }
        })
        .collect()
}
