//! One behaviour, both backends.

use super::*;

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
    let dir = std::env::temp_dir().join(format!("mcpgw-store-{}", std::process::id()));
    let store = std::sync::Arc::new(SqliteStore::open(&dir).await.unwrap());
    let writes = (0..32).map(|i| {
        let store = store.clone();
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
    assert_eq!(store.revoked_access_tokens(1_000).await.unwrap().len(), 32);
    let _ = std::fs::remove_dir_all(&dir);
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
