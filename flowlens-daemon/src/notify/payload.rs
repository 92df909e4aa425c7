//! PURE: what each target is sent for an alert state, in the formats the services
//! document. No I/O: the sender posts these.
//!
//! - Slack incoming webhooks: a JSON message with `text` (the notification's fallback,
//!   required when there are blocks) and Block Kit `blocks` (a `header` of at most 150
//!   characters of `plain_text`, a `section` of at most 3000 characters of `mrkdwn`, a
//!   `context`).
//! - PagerDuty Events API v2: `routing_key`, `event_action` (`trigger`, `acknowledge`,
//!   `resolve`) and `dedup_key` (the alert's id, so one alert is one incident); a
//!   trigger carries `payload` with `summary` (at most 1024 characters), `source`,
//!   `severity` (`critical`, `error`, `warning` or `info`) and optional `timestamp`,
//!   `group`, `class`, `custom_details`.
//! - Generic webhooks: `{"event": "alert.opened" | "alert.acknowledged" |
//!   "alert.resolved", "alert": {...}, "sent_at"}`, signed with HMAC-SHA256 over
//!   `"<timestamp>.<body>"` (header `X-FlowLens-Signature: sha256=<hex>`, the
//!   timestamp in `X-FlowLens-Timestamp`), so a receiver can check both the sender and
//!   the freshness.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::config::TargetKind;

/// An alert as the notifier reads it (`alerts` joined with its change event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: Uuid,
    pub rule_name: Option<String>,
    pub severity: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
    pub change_type: Option<String>,
    pub change_event_id: Option<Uuid>,
}

/// What happened to the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It opened.
    Trigger,
    Acknowledge,
    Resolve,
}

impl Action {
    /// The action an alert's status calls for.
    pub fn for_status(status: &str) -> Option<Self> {
        match status {
            "open" => Some(Self::Trigger),
            "acknowledged" => Some(Self::Acknowledge),
            "resolved" => Some(Self::Resolve),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Trigger, Self::Acknowledge, Self::Resolve]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    /// Whether a target of `kind` is told about this: Slack hears of alerts opening and
    /// being resolved (an acknowledgement is noise in a channel); PagerDuty and
    /// webhooks of every state.
    pub const fn wanted_by(self, kind: TargetKind) -> bool {
        !matches!((kind, self), (TargetKind::Slack, Self::Acknowledge))
    }

    /// The webhook's event name (body `event` and header `X-FlowLens-Event`).
    pub const fn webhook_event(self) -> &'static str {
        match self {
            Self::Trigger => "alert.opened",
            Self::Acknowledge => "alert.acknowledged",
            Self::Resolve => "alert.resolved",
        }
    }
}

/// At most `max` characters of `s` (whole characters), with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Slack message for `action` (trigger or resolve).
pub fn slack(alert: &Alert, action: Action) -> Value {
    let rule = alert.rule_name.as_deref().unwrap_or("-");
    let (prefix, who) = match action {
        Action::Resolve => (
            "RESOLVED".to_owned(),
            alert
                .resolved_by
                .as_deref()
                .map(|b| format!(" by {}", slack_escape(b)))
                .unwrap_or_default(),
        ),
        Action::Acknowledge => (
            "ACKNOWLEDGED".to_owned(),
            alert
                .acknowledged_by
                .as_deref()
                .map(|b| format!(" by {}", slack_escape(b)))
                .unwrap_or_default(),
        ),
        Action::Trigger => (alert.severity.to_uppercase(), String::new()),
    };
    let text = clip(
        &format!(
            "[{prefix}] {}{who} (FlowLens rule {rule})",
            slack_escape(&alert.title)
        ),
        3000,
    );
    let mut details = format!(
        "*Severity:* {}\n*Rule:* {}\n*Status:* {}{who}",
        alert.severity,
        slack_escape(rule),
        alert.status
    );
    if let Some(d) = alert.description.as_deref().filter(|d| !d.is_empty()) {
        details.push('\n');
        details.push_str(&slack_escape(d));
    }
    json!({
        "text": text,
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": clip(&format!("[{prefix}] {}", alert.title), 150),
                },
            },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": clip(&details, 3000) },
            },
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": format!("FlowLens alert {}{}", alert.id, alert
                        .created_at
                        .map(|t| format!(" · opened {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
                        .unwrap_or_default()),
                }],
            },
        ],
    })
}

/// PagerDuty's severity for ours (it has no `info`-below or `warning`-above levels
/// of its own to map onto: the names are shared).
fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "warning" => "warning",
        "info" => "info",
        _ => "error",
    }
}

/// The PagerDuty Events API v2 event for `action`.
pub fn pagerduty(alert: &Alert, action: Action, routing_key: &str) -> Value {
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action.as_str(),
        "dedup_key": alert.id.to_string(),
    });
    if action == Action::Trigger {
        let mut payload = json!({
            "summary": clip(&alert.title, 1024),
            "source": "flowlens",
            "severity": pagerduty_severity(&alert.severity),
            "custom_details": {
                "alert_id": alert.id,
                "rule": alert.rule_name,
                "description": alert.description,
                "change_event_id": alert.change_event_id,
            },
        });
        if let Some(t) = alert.created_at {
            payload["timestamp"] = json!(t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        if let Some(rule) = &alert.rule_name {
            payload["group"] = json!(rule);
        }
        if let Some(class) = &alert.change_type {
            payload["class"] = json!(class);
        }
        event["payload"] = payload;
        event["client"] = json!("FlowLens");
    }
    event
}

/// The generic webhook's body for `action`.
pub fn webhook(alert: &Alert, action: Action, sent_at: DateTime<Utc>) -> Value {
    json!({
        "event": action.webhook_event(),
        "alert": {
            "id": alert.id,
            "rule": alert.rule_name,
            "severity": alert.severity,
            "title": alert.title,
            "description": alert.description,
            "status": alert.status,
            "created_at": alert.created_at,
            "acknowledged_by": alert.acknowledged_by,
            "resolved_by": alert.resolved_by,
            "change_type": alert.change_type,
            "change_event_id": alert.change_event_id,
        },
        "sent_at": sent_at,
    })
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `"<timestamp>.<body>"`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("sha256={}", hmac_hex(secret, &[ts.as_bytes(), b".", body]))
}

/// Hex HMAC-SHA256 of the concatenated `parts`.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts any key length")
    };
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: Uuid::nil(),
            rule_name: Some("new-egress-dependency".into()),
            severity: "warning".into(),
            title: "New egress dependency: 10.3.0.10 -> 203.0.113.10 tcp/443 <https>".into(),
            description: Some("first seen in flows".into()),
            status: "open".into(),
            created_at: Some(DateTime::from_timestamp(1_765_000_000, 0).unwrap()),
            acknowledged_by: None,
            resolved_by: None,
            change_type: Some("new_dependency".into()),
            change_event_id: None,
        }
    }

    #[test]
    fn slack_messages_have_a_fallback_text_and_bounded_blocks() {
        let m = slack(&alert(), Action::Trigger);
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with("[WARNING] New egress dependency"),
            "{text}"
        );
        assert!(
            text.contains("&lt;https&gt;"),
            "mrkdwn control characters escaped"
        );
        assert_eq!(m["blocks"][0]["type"], "header");
        assert!(
            m["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 150
        );
        let mut long = alert();
        long.title = "x".repeat(500);
        let m = slack(&long, Action::Resolve);
        let header = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), 150);
        assert!(header.starts_with("[RESOLVED] x") && header.ends_with('…'));
    }

    #[test]
    fn pagerduty_events_follow_events_api_v2() {
        let e = pagerduty(&alert(), Action::Trigger, "R0UTINGKEY");
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], Uuid::nil().to_string());
        assert_eq!(e["payload"]["severity"], "warning");
        assert_eq!(e["payload"]["source"], "flowlens");
        assert_eq!(e["payload"]["group"], "new-egress-dependency");
        assert_eq!(e["payload"]["timestamp"], "2025-12-06T05:46:40.000Z");
        let r = pagerduty(&alert(), Action::Resolve, "R0UTINGKEY");
        assert_eq!(r["event_action"], "resolve");
        assert!(
            r.get("payload").is_none(),
            "resolve carries no payload: {r}"
        );
    }

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(b"Jefe", 1_765_000_000, b"{}");
        assert_eq!(
            sig,
            format!("sha256={}", hmac_hex(b"Jefe", &[b"1765000000.{}"]))
        );
        assert_ne!(sig, signature(b"Jefe", 1_765_000_001, b"{}"));
    }

    #[test]
    fn slack_is_not_told_of_acknowledgements() {
        assert!(!Action::Acknowledge.wanted_by(TargetKind::Slack));
        assert!(Action::Acknowledge.wanted_by(TargetKind::Pagerduty));
        assert_eq!(Action::for_status("resolved"), Some(Action::Resolve));
    }
}
