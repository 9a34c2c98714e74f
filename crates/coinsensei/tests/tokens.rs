//! `coinsensei tokens`: a token is printed once, listed by prefix only, revoked for good, and
//! every change is in the audit log.

mod common;

use common::*;
use store::AuditList;
use testkit::TestDb;

#[tokio::test]
async fn tokens_are_shown_once_listed_by_prefix_and_revoked() {
    let db = TestDb::sqlite();
    assert!(run(&db.url, &["migrate"]).await.status.success());
    let output = run(
        &db.url,
        &[
            "tokens",
            "create",
            "--role",
            "admin",
            "--name",
            "first admin",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(secret.starts_with("cst_") && secret.len() == 68, "{secret}");
    assert!(stderr(&output).contains("shown once"));

    let output = run(&db.url, &["tokens", "list", "--json"]).await;
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains(&secret[8..]), "the secret is never listed");
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0]["role"].as_str(), tokens[0]["prefix"].as_str()),
        (Some("admin"), Some(&secret[..8]))
    );
    let id = tokens[0]["id"].as_i64().unwrap().to_string();

    // The store finds it by its hash only.
    let store = db.store().await;
    let found = store
        .api_token_authenticate(&web::auth::hash_token(&secret), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        found.map(|token| token.name),
        Some("first admin".to_string())
    );

    assert!(
        run(&db.url, &["tokens", "revoke", &id])
            .await
            .status
            .success()
    );
    let again = run(&db.url, &["tokens", "revoke", &id]).await;
    assert!(!again.status.success() && stderr(&again).contains("already revoked"));
    let unknown = run(&db.url, &["tokens", "revoke", "4242"]).await;
    assert!(!unknown.status.success() && stderr(&unknown).contains("no token with id 4242"));
    let bad_role = run(
        &db.url,
        &["tokens", "create", "--role", "root", "--name", "x"],
    )
    .await;
    assert!(!bad_role.status.success() && stderr(&bad_role).contains("viewer"));
    assert!(
        store
            .api_token_authenticate(&web::auth::hash_token(&secret), chrono::Utc::now())
            .await
            .unwrap()
            .is_none()
    );

    let audit = store
        .audit_list(&AuditList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .rev()
        .map(|entry| entry.action.as_str())
        .collect();
    assert_eq!(actions, ["token.create", "token.revoke"]);
    assert!(
        audit
            .iter()
            .all(|entry| !entry.details.to_string().contains(&secret[8..])),
        "no secret in the audit log"
    );
}
