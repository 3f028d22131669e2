//! One behaviour, every backend: SQLite, PostgreSQL (a throwaway cluster,
//! each test in a database of its own) and memory.

use super::*;
use crate::config::{PostgresConfig, Secret};
use std::sync::Arc;
use std::time::Duration;

#[path = "../../tests/common/postgres.rs"]
mod pg;

/// The store of a fresh PostgreSQL database.
async fn postgres() -> PostgresStore {
    PostgresStore::open(&pg_config(pg::fresh_database()), true)
        .await
        .unwrap()
}

fn pg_config(url: String) -> PostgresConfig {
    PostgresConfig {
        url: Secret::new(url),
        pool_size: 8,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
        max_staleness: Duration::from_secs(30),
    }
}

fn refresh(hash: &[u8], family: &str) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.to_vec(),
        family_id: family.into(),
        client_id: "c".into(),
        subject: "alice".into(),
        scope: "mcp".into(),
        resource: "https://gw/mcp".into(),
        expires_at: 2_000,
        rotated: false,
    }
}

async fn backends() -> Vec<(&'static str, Box<dyn Store>)> {
    vec![
        ("sqlite", Box::new(SqliteStore::in_memory().await.unwrap())),
        ("postgres", Box::new(postgres().await)),
        ("memory", Box::new(MemoryStore::default())),
    ]
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_a_revoked_family_disappears() {
    for (name, s) in backends().await {
        let first = refresh(b"h1", "f1");
        assert!(s
            .record_issue("f1", "jti-1", 1_500, Some(&first))
            .await
            .unwrap());
        assert!(s.rotate_refresh_token(b"h1").await.unwrap(), "{name}");
        assert!(
            !s.rotate_refresh_token(b"h1").await.unwrap(),
            "{name}: second use is reuse"
        );
        // Each access token with its own expiry: how long the proxy must
        // keep refusing it does not depend on today's configured lifetime.
        assert_eq!(
            s.revoke_family("f1", 1_000).await.unwrap(),
            vec![("jti-1".to_owned(), 1_500)],
            "{name}"
        );
        assert!(s.refresh_token(b"h1").await.unwrap().is_none(), "{name}");
        assert_eq!(
            s.revoked_access_tokens(1_000).await.unwrap(),
            vec![("jti-1".to_owned(), 1_500)],
            "{name}"
        );
        assert_eq!(s.purge_expired(3_000).await.unwrap(), 4, "{name}");
    }
}

#[tokio::test]
async fn nothing_is_issued_into_a_revoked_family() {
    for (name, s) in backends().await {
        s.revoke_family("f2", 1_000).await.unwrap();
        let late = refresh(b"h2", "f2");
        assert!(
            !s.record_issue("f2", "jti-2", 1_500, Some(&late))
                .await
                .unwrap(),
            "{name}: issuance after the revocation is refused"
        );
        assert!(s.refresh_token(b"h2").await.unwrap().is_none(), "{name}");
        assert!(
            s.revoked_access_tokens(1_000).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_a_sqlite_file_all_land() {
    let dir = std::env::temp_dir().join(format!("mcpgw-store-race-{}", std::process::id()));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).await.unwrap());
    concurrent_revocations_all_land(&[store]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hardening issue's race (concurrent revocations lost) on PostgreSQL,
/// through two stores (two replicas) on one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_postgres_from_two_replicas_all_land() {
    let url = pg::fresh_database();
    concurrent_revocations_all_land(&two_replicas(&url).await).await;
}

/// Two stores (replicas) on the database of `url`.
async fn two_replicas(url: &str) -> [Arc<dyn Store>; 2] {
    let open = || async {
        Arc::new(
            PostgresStore::open(&pg_config(url.to_owned()), true)
                .await
                .unwrap(),
        ) as Arc<dyn Store>
    };
    [open().await, open().await]
}

/// 32 families issued and revoked at once, through the stores in turn;
/// every revocation lands.
async fn concurrent_revocations_all_land(stores: &[Arc<dyn Store>]) {
    let writes = (0..32).map(|i| {
        let store = stores[i % stores.len()].clone();
        tokio::spawn(async move {
            let family = format!("f{i}");
            let token = refresh(format!("h{i}").as_bytes(), &family);
            store
                .record_issue(&family, &format!("j{i}"), 1_500, Some(&token))
                .await?;
            store.revoke_family(&family, 1_000).await
        })
    });
    for write in futures_util::future::join_all(writes).await {
        assert_eq!(write.unwrap().unwrap().len(), 1, "every revocation lands");
    }
    assert_eq!(
        stores[0].revoked_access_tokens(1_000).await.unwrap().len(),
        32
    );
}

/// Across two replicas at once: a refresh token is rotated by exactly one;
/// an issue racing a revocation of its family is either refused or
/// revoked with it, never left alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_postgres_never_both_win() {
    let url = pg::fresh_database();
    let [a, b] = two_replicas(&url).await;
    for round in 0..20 {
        let family = format!("race-{round}");
        let hash = format!("h-{round}");
        assert!(a
            .record_issue(
                &family,
                &format!("j0-{round}"),
                1_500,
                Some(&refresh(hash.as_bytes(), &family))
            )
            .await
            .unwrap());
        let (x, y) = tokio::join!(
            a.rotate_refresh_token(hash.as_bytes()),
            b.rotate_refresh_token(hash.as_bytes())
        );
        assert_eq!(
            u8::from(x.unwrap()) + u8::from(y.unwrap()),
            1,
            "one rotation wins"
        );
        let late = format!("j1-{round}");
        let (issued, revoked) = tokio::join!(
            a.record_issue(&family, &late, 1_500, None),
            b.revoke_family(&family, 1_000)
        );
        let (issued, revoked) = (issued.unwrap(), revoked.unwrap());
        let dead = a.revoked_access_tokens(1_000).await.unwrap();
        if issued {
            assert!(
                dead.iter().any(|(j, _)| *j == late),
                "round {round}: an issued token is revoked with its family"
            );
        } else {
            assert!(!revoked.iter().any(|(j, _)| *j == late));
        }
    }
}

/// PostgreSQL restarted under a running store: calls fail while it is
/// down, and work again once it is back, with no new store (no gateway
/// restart), and nothing acknowledged before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_needs_no_store_restart() {
    let cluster = pg::Postgres::start();
    let store = PostgresStore::open(&pg_config(cluster.url("postgres")), true)
        .await
        .unwrap();
    store.put_consent("alice", "c", "mcp").await.unwrap();
    cluster.stop_server();
    let down = store.has_consent("alice", "c", "mcp").await;
    cluster.start_server();
    assert!(down.is_err(), "a store that is down says so");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.has_consent("alice", "c", "mcp").await {
            Ok(found) => {
                assert!(found, "what was acknowledged is still there");
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "not back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn clients_keys_and_consents_round_trip() {
    for (name, s) in backends().await {
        let client = ClientRecord {
            client_id: "c1".into(),
            secret_hash: None,
            metadata: "{}".into(),
            created_at: 1,
        };
        s.put_client(&client).await.unwrap();
        assert!(
            s.put_client(&client).await.is_err(),
            "{name}: ids are unique"
        );
        assert_eq!(s.client("c1").await.unwrap(), Some(client), "{name}");
        let key = |kid: &str, at| StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            pkcs8: vec![1],
            created_at: at,
        };
        s.add_signing_key(&key("b", 2)).await.unwrap();
        s.add_signing_key(&key("a", 1)).await.unwrap();
        assert_eq!(
            s.signing_keys().await.unwrap(),
            vec![key("a", 1), key("b", 2)],
            "{name}: oldest first"
        );
        s.remove_signing_key("a").await.unwrap();
        assert_eq!(s.signing_keys().await.unwrap().len(), 1, "{name}");
        s.put_consent("alice", "c1", "mcp").await.unwrap();
        assert!(s.has_consent("alice", "c1", "mcp").await.unwrap(), "{name}");
        assert!(
            !s.has_consent("alice", "c1", "mcp math").await.unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn sqlite_data_survives_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!("mcpgw-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let s = SqliteStore::open(&dir).await.unwrap();
        s.put_consent("alice", "c", "mcp").await.unwrap();
    }
    let s = SqliteStore::open(&dir).await.unwrap();
    assert!(s.has_consent("alice", "c", "mcp").await.unwrap());
    assert!(!s.has_consent("bob", "c", "mcp").await.unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_persons_latest_record_is_kept() {
    for (name, s) in backends().await {
        assert_eq!(s.person("corp|1").await.unwrap(), None, "{name}");
        let first = PersonRecord {
            claims: r#"{"groups":["a"]}"#.into(),
            idp_refresh_token: Some("rt-1".into()),
            signed_in_at: 10,
        };
        s.put_person("corp|1", &first).await.unwrap();
        let later = PersonRecord {
            claims: r#"{"groups":[]}"#.into(),
            idp_refresh_token: None,
            signed_in_at: 10,
        };
        s.put_person("corp|1", &later).await.unwrap();
        assert_eq!(s.person("corp|1").await.unwrap(), Some(later), "{name}");
    }
}

/// Replicas starting together on an empty database apply each schema
/// version once (the advisory lock), and all open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let url = pg::fresh_database();
    let config = pg_config(url.clone());
    let opens = (0..4).map(|_| PostgresStore::open(&config, true));
    let mut versions = Vec::new();
    for store in futures_util::future::join_all(opens).await {
        versions.push(store.unwrap().schema_version().await.unwrap());
    }
    let latest = postgres::MIGRATIONS.len();
    assert!(versions.iter().all(|&v| v == latest), "{versions:?}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, latest as i64, "each version recorded once");
}

/// A database migrated by a newer gateway is refused, not used (its
/// schema may mean what this binary does not know); one that lacks
/// versions is refused when migrations are not to be applied.
#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let url = pg::fresh_database();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let unmigrated = PostgresStore::open(&pg_config(url.clone()), false).await;
    assert!(
        unmigrated.is_err_and(|e| e.0.contains("mcp-oauth-gateway migrate")),
        "an unmigrated database names the command"
    );
    PostgresStore::open(&pg_config(url.clone()), true)
        .await
        .unwrap();
    sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
        .execute(&pool)
        .await
        .unwrap();
    let newer = PostgresStore::open(&pg_config(url), true).await;
    assert!(newer.is_err_and(|e| e.0.contains("version 99, newer")));

    let dir = std::env::temp_dir().join(format!("mcpgw-store-newer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    drop(SqliteStore::open(&dir).await.unwrap());
    let file = sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("gateway.db").display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
        .execute(&file)
        .await
        .unwrap();
    file.close().await;
    assert!(SqliteStore::open(&dir)
        .await
        .is_err_and(|e| e.0.contains("version 99, newer")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The URL's password never appears in an error.
#[tokio::test]
async fn a_connection_error_does_not_show_the_password() {
    let url = "postgres://gateway:hunter2-secret@127.0.0.1:1/nowhere".to_owned();
    let mut config = pg_config(url);
    config.acquire_timeout = Duration::from_millis(500);
    let error = PostgresStore::open(&config, true).await.err().unwrap();
    assert!(!error.0.contains("hunter2-secret"), "{}", error.0);
}

/// A code is taken once: the first take gets its grant, every later one
/// the family to revoke; an expired code is taken as unknown (and is used
/// from then on); expired records are purged.
#[tokio::test]
async fn a_code_is_taken_once_and_a_replay_names_its_family() {
    for (name, s) in backends().await {
        s.put_code(b"c1", "{\"grant\":1}", "fam-1", 2_000, 20_000)
            .await
            .unwrap();
        assert_eq!(
            s.take_code(b"c1", 1_000).await.unwrap(),
            TakenCode::Fresh("{\"grant\":1}".into()),
            "{name}"
        );
        assert_eq!(
            s.take_code(b"c1", 1_001).await.unwrap(),
            TakenCode::Replayed("fam-1".into()),
            "{name}: a replay"
        );
        assert_eq!(
            s.take_code(b"nope", 1_000).await.unwrap(),
            TakenCode::Unknown
        );
        s.put_code(b"c2", "{}", "fam-2", 2_000, 20_000)
            .await
            .unwrap();
        assert_eq!(
            s.take_code(b"c2", 2_000).await.unwrap(),
            TakenCode::Unknown,
            "{name}: expired"
        );
        // `purge_expired` takes seconds; code times are milliseconds.
        s.purge_expired(19).await.unwrap();
        assert_eq!(
            s.take_code(b"c1", 19_000).await.unwrap(),
            TakenCode::Replayed("fam-1".into()),
            "{name}: remembered until forget_at"
        );
        s.purge_expired(20).await.unwrap();
        assert_eq!(
            s.take_code(b"c1", 20_000).await.unwrap(),
            TakenCode::Unknown,
            "{name}: forgotten"
        );
    }
}

/// Replicas redeeming one code at once: exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_a_code_on_postgres_never_both_get_it() {
    let url = pg::fresh_database();
    let [a, b] = two_replicas(&url).await;
    for round in 0..20u8 {
        let hash = [round; 32];
        a.put_code(&hash, "{}", "fam", 5_000, 50_000).await.unwrap();
        let (x, y) = tokio::join!(a.take_code(&hash, 1_000), b.take_code(&hash, 1_000));
        let fresh = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter(|t| matches!(t, TakenCode::Fresh(_)))
            .count();
        assert_eq!(fresh, 1, "round {round}");
    }
}

/// Entries live until their expiry, are replaced by a write, and are taken
/// once; kinds do not share keys; expired ones are purged.
#[tokio::test]
async fn states_expire_are_replaced_and_are_taken_once() {
    for (name, s) in backends().await {
        s.put_state("flow", b"k1", "one", 5_000).await.unwrap();
        s.put_state("flow", b"k1", "two", 6_000).await.unwrap();
        assert_eq!(
            s.state("flow", b"k1", 1_000).await.unwrap(),
            Some(("two".into(), 6_000)),
            "{name}: replaced"
        );
        assert_eq!(
            s.state("session", b"k1", 1_000).await.unwrap(),
            None,
            "{name}: kinds apart"
        );
        assert_eq!(
            s.state("flow", b"k1", 6_000).await.unwrap(),
            None,
            "{name}: expired"
        );
        assert_eq!(
            s.take_state("flow", b"k1", 1_000).await.unwrap(),
            Some("two".into()),
            "{name}"
        );
        assert_eq!(
            s.take_state("flow", b"k1", 1_000).await.unwrap(),
            None,
            "{name}: once"
        );
        s.put_state("flow", b"k2", "old", 2_000).await.unwrap();
        assert_eq!(
            s.take_state("flow", b"k2", 2_000).await.unwrap(),
            None,
            "{name}: an expired entry is not taken"
        );
        s.put_state("flow", b"k3", "old", 2_000).await.unwrap();
        s.purge_expired(2).await.unwrap();
        s.put_state("flow", b"k3", "new", 9_000).await.unwrap();
        assert_eq!(
            s.state("flow", b"k3", 1_000).await.unwrap().map(|(v, _)| v),
            Some("new".into()),
            "{name}"
        );
    }
}

/// A counter counts within its window, starts again after it, and is
/// forgotten on reset.
#[tokio::test]
async fn counters_count_in_a_fixed_window() {
    for (name, s) in backends().await {
        let c = s
            .bump_counter("logins", b"alice", 1_000, 10_000)
            .await
            .unwrap();
        assert_eq!(
            (c.count, c.started_at, c.last_at),
            (1, 1_000, 1_000),
            "{name}"
        );
        let c = s
            .bump_counter("logins", b"alice", 4_000, 10_000)
            .await
            .unwrap();
        assert_eq!(
            (c.count, c.started_at, c.last_at),
            (2, 1_000, 4_000),
            "{name}"
        );
        assert_eq!(
            s.counter("logins", b"alice", 5_000).await.unwrap(),
            Some(c),
            "{name}"
        );
        assert_eq!(
            s.counter("other", b"alice", 5_000).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            s.counter("logins", b"alice", 11_000).await.unwrap(),
            None,
            "{name}: window over"
        );
        let c = s
            .bump_counter("logins", b"alice", 11_000, 10_000)
            .await
            .unwrap();
        assert_eq!((c.count, c.started_at), (1, 11_000), "{name}: a new window");
        s.reset_counter("logins", b"alice").await.unwrap();
        assert_eq!(
            s.counter("logins", b"alice", 12_000).await.unwrap(),
            None,
            "{name}"
        );
    }
}

/// Replicas taking one entry at once (two posts of a consent form, two
/// callbacks of one sign-in): one gets it. Replicas counting at once: no
/// count is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_an_entry_once_and_lose_no_count_on_postgres() {
    let url = pg::fresh_database();
    let [a, b] = two_replicas(&url).await;
    for round in 0..20u8 {
        let key = [round; 32];
        a.put_state("flow", &key, "v", 50_000).await.unwrap();
        let (x, y) = tokio::join!(
            a.take_state("flow", &key, 1_000),
            b.take_state("flow", &key, 1_000)
        );
        let got = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|t| t.is_some())
            .count();
        assert_eq!(got, 1, "round {round}");
    }
    let bumps = (0..40).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.bump_counter("addr", b"10.0.0.1", 1_000, 60_000).await })
    });
    let mut counts: Vec<u32> = Vec::new();
    for bump in bumps {
        counts.push(bump.await.unwrap().unwrap().count);
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=40).collect::<Vec<u32>>());
}
