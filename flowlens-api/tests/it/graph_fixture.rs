//! A small enterprise graph with known answers, built through the API.

use std::collections::HashMap;

use crate::support::TestApi;

/// Asset name -> id, and "source->target:port" -> dependency id.
pub(crate) struct Fixture {
    pub(crate) a: HashMap<&'static str, String>,
    pub(crate) d: HashMap<String, String>,
}

impl Fixture {
    pub(crate) fn id(&self, name: &str) -> &str {
        &self.a[name]
    }

    /// The name of an asset id.
    pub(crate) fn name(&self, id: &str) -> &'static str {
        self.a
            .iter()
            .find(|(_, v)| v.as_str() == id)
            .map_or("?", |(k, _)| k)
    }
}

/// client1, client2 -> web:443 -> app:8080 -> db:5432, app -> ext:443 (egress),
/// stage -> db:5432 (staging), web -> old:80 (stale), lonely (no dependency).
pub(crate) async fn build(api: &TestApi) -> Fixture {
    let mut a = HashMap::new();
    for (i, name) in [
        "client1", "client2", "web", "app", "db", "ext", "stage", "old", "lonely",
    ]
    .into_iter()
    .enumerate()
    {
        let ip = if name == "ext" {
            "203.0.113.7".to_owned()
        } else {
            format!("10.0.0.{}", i + 1)
        };
        a.insert(name, api.asset(name, &[ip.as_str()]).await);
    }
    sqlx::query(
        "UPDATE assets SET environment = CASE WHEN name = 'stage' THEN 'staging' ELSE 'prod' END,
                           is_internal = (name <> 'ext')",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    let mut d = HashMap::new();
    for (s, t, port) in [
        ("client1", "web", 443),
        ("client2", "web", 443),
        ("web", "app", 8080),
        ("app", "db", 5432),
        ("app", "ext", 443),
        ("stage", "db", 5432),
        ("web", "old", 80),
    ] {
        let id = api.dependency(&a[s], &a[t], port).await;
        d.insert(format!("{s}->{t}:{port}"), id);
    }
    // What the daemon would know about them.
    sqlx::query(
        "UPDATE dependencies SET
            inferred_service = CASE port WHEN 443 THEN 'https' WHEN 5432 THEN 'postgresql'
                                         WHEN 8080 THEN 'http-alt' ELSE 'http' END,
            total_bytes = port * 1000,
            is_internal = NOT (target_asset_id = $1::uuid),
            stale = (target_asset_id = $2::uuid)",
    )
    .bind(&a["ext"])
    .bind(&a["old"])
    .execute(&api.pool)
    .await
    .unwrap();
    // Direct SQL changes announce nothing: drop what the API derived, once every
    // notification of the API writes above has arrived.
    api.settle().await;
    api.state.graph_changed().await;
    Fixture { a, d }
}
