//! The `notifications` section: where alerts go, and how hard to try.

use serde::{Deserialize, Serialize};

use crate::graph::config::Severity;

/// Alert notifications (issue 18): each alert state (opened, acknowledged, resolved)
/// goes to every target whose filters it passes, through a bounded, durable queue in
/// PostgreSQL with retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where alerts go; none: no notifications.
    pub targets: Vec<NotificationTarget>,
    /// Deliveries waiting at most (all targets together); past it a new delivery is
    /// recorded as `dropped` and counted, so a target that is down for days cannot
    /// grow the queue without bound.
    pub max_pending: u32,
    /// Attempts per delivery before it is recorded as `failed`.
    pub max_attempts: u32,
    /// The first retry waits this long; each next one twice as long (up to
    /// `max_backoff_seconds`), less up to a fifth (by the delivery's id) so retries
    /// of many deliveries spread.
    pub initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    pub max_backoff_seconds: u64,
    /// Per request.
    pub timeout_ms: u64,
    /// Finished deliveries (delivered, failed, dropped) are kept this many days as the
    /// record of what was sent, then deleted (checked hourly by the sending instance).
    pub retention_days: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            max_pending: 10_000,
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_seconds: 300,
            timeout_ms: 10_000,
            retention_days: 30,
        }
    }
}

/// One destination.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationTarget {
    /// Unique; deliveries are recorded under it.
    pub name: String,
    pub kind: TargetKind,
    /// `slack`: the incoming webhook's URL (a secret: shown redacted); `pagerduty`: the
    /// Events API v2 endpoint (default `https://events.pagerduty.com/v2/enqueue`);
    /// `webhook`: where to POST. `${VAR}` takes it from the environment.
    #[serde(default)]
    pub url: String,
    /// `pagerduty`: the integration's routing key (`${VAR}`: from the environment).
    #[serde(default)]
    pub routing_key: String,
    /// `webhook`: the HMAC-SHA256 key that signs each request (`${VAR}`: from the
    /// environment); empty: unsigned.
    #[serde(default)]
    pub secret: String,
    /// Only alerts raised by these rules (`alerts.rules` names); empty: all.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only alerts at least this severe.
    #[serde(default = "info")]
    pub min_severity: Severity,
}

fn info() -> Severity {
    Severity::Info
}

impl std::fmt::Debug for NotificationTarget {
    /// Without the secrets (a Slack webhook's URL is its secret; a webhook's path or
    /// query may carry a token): only the URL's scheme and host, and whether a routing
    /// key or signing secret is set. Debug output ends up in logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = reqwest::Url::parse(&self.url).map_or_else(
            |_| {
                if self.url.is_empty() {
                    String::new()
                } else {
                    "<unparsed>".to_owned()
                }
            },
            |u| format!("{}://{}/<redacted>", u.scheme(), u.host_str().unwrap_or("")),
        );
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("NotificationTarget")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &origin)
            .field("routing_key", &set(&self.routing_key))
            .field("secret", &set(&self.secret))
            .field("rules", &self.rules)
            .field("min_severity", &self.min_severity)
            .finish()
    }
}

/// What a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Slack incoming webhook: a message when an alert opens and when it is resolved.
    Slack,
    /// PagerDuty Events API v2: trigger, acknowledge and resolve, one incident per
    /// alert (the alert's id is the dedup key).
    Pagerduty,
    /// A generic JSON webhook, HMAC-signed: every state.
    Webhook,
}

impl TargetKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Pagerduty => "pagerduty",
            Self::Webhook => "webhook",
        }
    }
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl NotificationTarget {
    /// The URL to post to, with `${VAR}` resolved and PagerDuty's default.
    pub fn endpoint(&self) -> Result<String, String> {
        let url = resolve(&self.url)?;
        if url.is_empty() && self.kind == TargetKind::Pagerduty {
            return Ok(PAGERDUTY_EVENTS_URL.to_owned());
        }
        Ok(url)
    }

    /// Every problem with this target, for `Config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let at = format!("notifications.targets[{}]", self.name);
        if self.name.is_empty() || self.name.len() > 100 {
            p.push(format!("{at}: name must be 1 to 100 characters"));
        }
        match self.endpoint() {
            Ok(url) if url.is_empty() => p.push(format!("{at}: url is required")),
            Ok(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                p.push(format!("{at}: url must be http(s)://"));
            }
            Ok(_) => {}
            Err(e) => p.push(format!("{at}: url: {e}")),
        }
        match (self.kind, resolve(&self.routing_key)) {
            (TargetKind::Pagerduty, Ok(k)) if k.is_empty() => {
                p.push(format!("{at}: routing_key is required for pagerduty"));
            }
            (_, Err(e)) => p.push(format!("{at}: routing_key: {e}")),
            _ => {}
        }
        if let Err(e) = resolve(&self.secret) {
            p.push(format!("{at}: secret: {e}"));
        }
        p
    }
}

impl NotificationsConfig {
    /// Every problem with the section, for `Config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .targets
            .iter()
            .flat_map(NotificationTarget::problems)
            .collect();
        let mut names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            p.push("notifications.targets: names must be unique".into());
        }
        if self.max_attempts == 0 {
            p.push("notifications.max_attempts must be at least 1".into());
        }
        if self.max_pending == 0 {
            p.push("notifications.max_pending must be at least 1".into());
        }
        if self.initial_backoff_ms == 0 {
            p.push("notifications.initial_backoff_ms must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.max_backoff_seconds) {
            p.push("notifications.max_backoff_seconds must be 1 to 86400".into());
        }
        if self.timeout_ms < 100 {
            p.push("notifications.timeout_ms must be at least 100".into());
        }
        if !(1..=3650).contains(&self.retention_days) {
            p.push("notifications.retention_days must be 1 to 3650".into());
        }
        p
    }
}

/// A value, or the environment variable it names as `${VAR}` (the whole value).
pub fn resolve(value: &str) -> Result<String, String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(var) => std::env::var(var).map_err(|_| format!("${{{var}}} is not set")),
        None => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_carries_no_secret() {
        let slack = NotificationTarget {
            name: "ops".into(),
            kind: TargetKind::Slack,
            url: "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX".into(),
            routing_key: String::new(),
            secret: String::new(),
            rules: vec![],
            min_severity: Severity::Warning,
        };
        let hook = NotificationTarget {
            name: "siem".into(),
            kind: TargetKind::Webhook,
            url: "https://siem.example.com/in?token=tok-123".into(),
            routing_key: "rk-456".into(),
            secret: "hmac-789".into(),
            ..slack.clone()
        };
        for (t, secrets) in [
            (&slack, &["XXXXsecretXXXX", "T000"][..]),
            (&hook, &["tok-123", "rk-456", "hmac-789"][..]),
        ] {
            let shown = format!("{t:?}");
            for s in secrets {
                assert!(!shown.contains(s), "{s} in {shown}");
            }
            assert!(shown.contains(&t.name), "{shown}");
        }
        assert!(format!("{hook:?}").contains("https://siem.example.com/<redacted>"));
    }
}
