//! The authorization server under races (issue 11.3): simultaneous
//! revocations, one code or one refresh token used eight times at once, and
//! a refused refresh that must not burn its token.

mod common;

use common::authserver::*;
use common::browser::Browser;

/// Issue 11.3: eight simultaneous revocations of eight families all take
/// effect (RFC 7009 §2.2), round after round, with no 500 from a locked
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_of_different_families_all_take_effect() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..4 {
        let mut families = Vec::new();
        for _ in 0..RACERS {
            families.push(fresh_tokens(&s, &mut browser, &client_id).await);
        }
        let revocations = families.iter().map(|tokens| {
            s.http
                .post(s.url("/revoke"))
                .form(&[
                    ("token", tokens["refresh_token"].as_str().unwrap()),
                    ("client_id", &client_id),
                ])
                .send()
        });
        for resp in futures_util::future::join_all(revocations).await {
            let resp = resp.unwrap();
            let status = resp.status().as_u16();
            assert_eq!(status, 200, "round {round}: {}", resp.text().await.unwrap());
        }
        for tokens in &families {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.3, Authorization server 8: one code raced eight times is
/// redeemed at most once; the losers get invalid_grant (never 500), and the
/// reuse revokes whatever the winner got, even when issued concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_raced_eight_times_is_single_use_and_revokes_the_winner() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..6 {
        let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
        let answers = futures_util::future::join_all(
            (0..RACERS).map(|_| exchange(&s, &client_id, &code, &verifier)),
        )
        .await;
        let winners = at_most_one_winner(&answers, round);
        for tokens in winners {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.3: one refresh token raced eight times: at most one new pair,
/// no 500, and the reuse revokes the family including that pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_raced_eight_times_revokes_the_whole_family() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..6 {
        let tokens = fresh_tokens(&s, &mut browser, &client_id).await;
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let answers = futures_util::future::join_all(
            (0..RACERS).map(|_| refresh_with(&s, &client_id, refresh)),
        )
        .await;
        let winners = at_most_one_winner(&answers, round);
        assert_family_dead(&s, &client_id, &tokens, &format!("round {round}")).await;
        for tokens in winners {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.4, RFC 6749 §6: a refresh refused for its scope or resource
/// issues nothing, so it rotates nothing: the client's corrected retry
/// works and the family is not revoked as a reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_leaves_the_refresh_token_usable() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let tokens = fresh_tokens(&s, &mut browser, &client_id).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, err) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
            ("scope", "mcp math"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, err) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
            ("resource", "http://elsewhere.example/mcp"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, renewed) = refresh_with(&s, &client_id, refresh).await;
    assert_eq!(status, 200, "the corrected retry works: {renewed}");
    let (status, body, _) = call_tool(&s, tokens["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 200, "the family was not revoked: {body}");
}
