//! The main job's embedded PostgreSQL is durable: fsync and full-page writes on, a
//! password required over TCP, and it stays durable across a restart. (Tests and
//! benchmarks keep fast scratch clusters; see `flowlens-pgcluster`.)

use flowlens_daemon::store::cluster::{Cluster, Durability};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_jobs_cluster_is_durable_and_needs_a_password() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/test-pg-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ensure = |dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || Cluster::ensure_with(&dir, Durability::Durable))
    };
    let cluster = ensure(dir.clone()).await.unwrap().unwrap();
    assert!(cluster.is_durable());
    let settings = |url: String| async move {
        let pool = flowlens_daemon::store::connect(&url, 1).await?;
        let mut out = Vec::new();
        for name in ["fsync", "full_page_writes", "synchronous_commit"] {
            let v: String = sqlx::query_scalar(&format!("SHOW {name}"))
                .fetch_one(&pool)
                .await?;
            out.push(v);
        }
        Ok::<_, flowlens_daemon::store::StoreError>(out)
    };
    assert_eq!(
        settings(cluster.url("postgres")).await.unwrap(),
        ["on", "on", "off"]
    );
    // Without the password: refused.
    let bare = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    assert!(settings(bare).await.is_err(), "trust authentication is off");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("password"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Stopped and started again (as `Cluster::ensure` does for tests): still durable.
    let stopped = cluster.clone();
    tokio::task::spawn_blocking(move || stopped.stop())
        .await
        .unwrap()
        .unwrap();
    let again = tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        settings(again.url("postgres")).await.unwrap(),
        ["on", "on", "off"]
    );
    tokio::task::spawn_blocking(move || again.stop())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
