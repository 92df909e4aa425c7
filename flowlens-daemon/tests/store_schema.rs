//! The schema on a real PostgreSQL (private cluster under target/test-pg, or the
//! server of `DATABASE_URL`): migrations are idempotent, one address belongs to one
//! asset, change events are announced with NOTIFY, partitions are created ahead and
//! raw partitions dropped after their retention.

use flowlens_daemon::store;
use flowlens_daemon::testing::postgres::scratch;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_create_the_design_tables() {
    let db = scratch("idempotent").await;
    // A second run (the API starting after the daemon) changes nothing.
    store::migrate(&db.pool).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for t in [
        "alerts",
        "asset_addresses",
        "assets",
        "audit_logs",
        "change_events",
        "dependencies",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    let partitioned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(partitioned, ["flow_raw", "flow_stats"]);
    let extensions: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(extensions.iter().any(|e| e == "pg_trgm"), "{extensions:?}");
}

async fn insert_asset(pool: &sqlx::PgPool, name: &str, ips: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assets (name, asset_type, ip_addresses, first_seen, last_seen, discovery_source)
         VALUES ($1, 'server', $2::inet[], now(), now(), 'manual')",
    )
    .bind(name)
    .bind(ips)
    .execute(pool)
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_belongs_to_one_asset() {
    let db = scratch("oneaddress").await;
    // A manual asset with several addresses.
    insert_asset(&db.pool, "db1", &["10.0.0.1", "10.0.0.2"])
        .await
        .unwrap();
    let err = insert_asset(&db.pool, "dup", &["10.0.0.3", "10.0.0.2"])
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .map(std::borrow::Cow::into_owned);
    assert_eq!(code.as_deref(), Some("23505"), "{err}");
    // The refused insert left nothing behind.
    let owners: Vec<(String, String)> = sqlx::query(
        "SELECT host(aa.ip), a.name FROM asset_addresses aa JOIN assets a ON a.id = aa.asset_id ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(
        owners,
        [
            ("10.0.0.1".to_owned(), "db1".to_owned()),
            ("10.0.0.2".to_owned(), "db1".to_owned())
        ]
    );
    // Moving an address between updates of the same asset follows it.
    sqlx::query("UPDATE assets SET ip_addresses = '{10.0.0.2,10.0.0.9}' WHERE name = 'db1'")
        .execute(&db.pool)
        .await
        .unwrap();
    let ips: Vec<String> = sqlx::query_scalar("SELECT host(ip) FROM asset_addresses ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ips, ["10.0.0.2", "10.0.0.9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_are_announced() {
    let db = scratch("notify").await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("flowlens_changes").await.unwrap();
    let id: sqlx::types::Uuid = sqlx::query_scalar(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         VALUES ('new_asset', 'asset', gen_random_uuid(), '{\"name\":\"x\"}') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(payload["id"], id.to_string());
    assert_eq!(payload["change_type"], "new_asset");
    assert_eq!(payload["entity_type"], "asset");
}

/// The start-up helper of earlier versions (`flowlens_ensure_partitions`), as an older
/// daemon calls it: today and two days ahead, raw partitions kept 7 days.
async fn ensure_partitions(pool: &sqlx::PgPool) -> Result<i32, store::StoreError> {
    Ok(
        sqlx::query_scalar("SELECT flowlens_ensure_partitions(current_date, 3, 7)")
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_and_raw_ones_expire() {
    let db = scratch("partitions").await;
    // Today and two days ahead, for both tables.
    assert_eq!(ensure_partitions(&db.pool).await.unwrap(), 6);
    assert_eq!(ensure_partitions(&db.pool).await.unwrap(), 0);
    // An old raw partition (10 days ago) is dropped by the next call.
    sqlx::query("SELECT flowlens_ensure_partitions(current_date - 10, 1, 7)")
        .execute(&db.pool)
        .await
        .unwrap();
    let old = format!(
        "flow_raw_{}",
        sqlx::query_scalar::<_, String>("SELECT to_char(current_date - 10, 'YYYYMMDD')")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    );
    let exists = |name: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // That same call created it and then dropped it as expired.
    assert!(!exists(old.clone()).await);
    // flow_stats partitions leave room for HOT updates of their counters.
    let options: Vec<Option<Vec<String>>> = sqlx::query_scalar(
        "SELECT c.reloptions::text[] FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'flow_stats'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        options.len(),
        5,
        "default, 3 days ahead, the old day (flow_stats keeps it)"
    );
    for o in options {
        assert_eq!(o, Some(vec!["fillfactor=50".to_owned()]));
    }
    // A row for today goes to today's partition, not the default.
    sqlx::query(
        "INSERT INTO flow_raw (exporter_ip, src_ip, dst_ip, src_port, dst_port, protocol, bytes, packets)
         VALUES ('192.0.2.1', '10.0.0.1', '10.0.0.2', 40000, 443, 6, 100, 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_raw_default")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(in_default, 0);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_raw")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 1);
}

/// Rows of `table` (a partition or a default partition).
async fn rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count rows")
}

/// The name of `table`'s partition for the day `offset` days from today.
async fn day_partition(pool: &sqlx::PgPool, table: &str, offset: i32) -> String {
    let day: String = sqlx::query_scalar("SELECT to_char(current_date + $1, 'YYYYMMDD')")
        .bind(offset)
        .fetch_one(pool)
        .await
        .expect("day name");
    format!("{table}_{day}")
}

async fn stats_row_at(pool: &sqlx::PgPool, days: i32, port: i32) {
    sqlx::query(
        "INSERT INTO flow_stats (time, source_asset_id, target_asset_id, protocol, port,
                                 flow_count, byte_count, packet_count)
         VALUES (now() + make_interval(days => $1), gen_random_uuid(), gen_random_uuid(),
                 6, $2, 1, 100, 1)",
    )
    .bind(days)
    .bind(port)
    .execute(pool)
    .await
    .expect("insert a flow_stats row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeep_keeps_a_week_ahead_moves_default_rows_and_applies_retention() {
    let db = scratch("upkeep").await;
    let pool = &db.pool;
    // The daemon was down for days: rows of days without a partition went to the
    // default partitions (5 days ago, and one far in the future from a bad clock).
    stats_row_at(pool, -5, 1).await;
    stats_row_at(pool, -5, 2).await;
    stats_row_at(pool, 30, 3).await;
    sqlx::query(
        "INSERT INTO flow_raw (received_at, exporter_ip, src_ip, dst_ip, src_port, dst_port,
                               protocol, bytes, packets)
         VALUES (now() - interval '3 days', '192.0.2.1', '10.0.0.1', '10.0.0.2', 40000, 443,
                 6, 100, 1)",
    )
    .execute(pool)
    .await
    .unwrap();
    // And a day past the 90-day flow_stats retention.
    stats_row_at(pool, -120, 4).await;
    assert_eq!(rows(pool, "flow_stats_default").await, 4);

    let u = store::maintain_partitions(pool, 7, 90).await.unwrap();
    assert_eq!(u.moved_rows, 4, "{u:?}");
    assert_eq!(u.expired_rows, 1, "{u:?}");
    assert_eq!((u.default_raw_rows, u.default_stats_rows), (0, 0), "{u:?}");
    // Today and 7 days ahead for both tables, plus the three recovered days.
    assert_eq!(u.created, 2 * 8 + 3, "{u:?}");
    for offset in 0..=store::PARTITION_DAYS_AHEAD {
        for table in ["flow_raw", "flow_stats"] {
            let name = day_partition(pool, table, offset).await;
            assert_eq!(rows(pool, &name).await, 0, "{name} exists");
        }
    }
    assert_eq!(
        rows(pool, &day_partition(pool, "flow_stats", -5).await).await,
        2
    );
    assert_eq!(
        rows(pool, &day_partition(pool, "flow_stats", 30).await).await,
        1
    );
    assert_eq!(
        rows(pool, &day_partition(pool, "flow_raw", -3).await).await,
        1
    );
    // A recovered partition is a real partition: its day's next row goes there.
    stats_row_at(pool, -5, 5).await;
    assert_eq!(rows(pool, "flow_stats_default").await, 0);
    assert_eq!(
        rows(pool, &day_partition(pool, "flow_stats", -5).await).await,
        3
    );
    let fill: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions::text[] FROM pg_class WHERE relname = $1")
            .bind(day_partition(pool, "flow_stats", -5).await)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(fill, Some(vec!["fillfactor=50".to_owned()]));

    // Nothing to do the second time; retention drops what ages out (a shorter one
    // here: the -5 day partition of flow_stats, the -3 day one of flow_raw).
    let again = store::maintain_partitions(pool, 7, 90).await.unwrap();
    assert_eq!((again.created, again.moved_rows, again.dropped), (0, 0, 0));
    let short = store::maintain_partitions(pool, 2, 4).await.unwrap();
    assert_eq!(short.dropped, 2, "{short:?}");
    let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(day_partition(pool, "flow_stats", -5).await)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(gone, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upkeep_from_several_processes_all_succeeds() {
    let db = scratch("upkeep_race").await;
    // Rows in the default partition too, so the callers race on moving them as well.
    stats_row_at(&db.pool, -2, 1).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 2 {
                // An older process still calling the start-up helper.
                ensure_partitions(&pool).await.map(|_| 0)
            } else {
                store::maintain_partitions(&pool, 7, 90)
                    .await
                    .map(|u| u.created)
            }
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += t.await.unwrap().expect("every caller succeeds");
    }
    // Each partition was created exactly once, whoever created it (the helper's
    // partitions are counted by the helper, not here: at most all of them).
    assert!(created <= 2 * 8 + 1, "{created}");
    assert_eq!(rows(&db.pool, "flow_stats_default").await, 0);
    assert_eq!(
        rows(&db.pool, &day_partition(&db.pool, "flow_stats", -2).await).await,
        1
    );
}
