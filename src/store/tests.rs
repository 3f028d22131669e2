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
        s.put_refresh_token(&refresh(b"h1", "f1")).await.unwrap();
        s.record_access_token("jti-1", "f1", 1_500).await.unwrap();
        assert!(s.rotate_refresh_token(b"h1").await.unwrap(), "{name}");
        assert!(
            !s.rotate_refresh_token(b"h1").await.unwrap(),
            "{name}: second use is reuse"
        );
        assert_eq!(
            s.revoke_family("f1", 1_000).await.unwrap(),
            vec!["jti-1"],
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
