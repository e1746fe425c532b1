//! The stand-in's own behaviour, checked directly (no proxy): it must refuse what Twilio
//! refuses, or the end-to-end tests that rely on it prove nothing.

mod support;

use std::time::Duration;

use pkcv_standin::StandIn;
use support::{basic, TestAccount};

fn direct_client(standin: &StandIn) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(standin.ca_pem().as_bytes()).unwrap())
        .resolve("api.twilio.com", standin.addr())
        .resolve("accounts.twilio.com", standin.addr())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn code(response: reqwest::Response) -> (u16, Option<u64>) {
    let status = response.status().as_u16();
    let json: serde_json::Value = response.json().await.unwrap_or_default();
    (status, json["code"].as_u64())
}

#[tokio::test]
async fn unsigned_requests_pass_only_where_pkcv_is_not_enforced() {
    let a = TestAccount::a();
    let standin = StandIn::start(support::registry(std::slice::from_ref(&a)))
        .await
        .unwrap();
    let client = direct_client(&standin);
    let url = format!(
        "https://api.twilio.com:{}/2010-04-01/Accounts/{}.json",
        standin.addr().port(),
        a.account_sid
    );

    let unsigned = client
        .get(&url)
        .header("authorization", a.basic_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(unsigned).await,
        (401, Some(20151)),
        "an enforcing account accepted an unsigned request"
    );

    standin
        .update_registry(|r| r.set_enforcement(&a.account_sid, false))
        .await;
    let unsigned = client
        .get(&url)
        .header("authorization", a.basic_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 200);

    // Wrong secret, unknown key, Auth Token: refused whatever the enforcement.
    for auth in [
        basic(&a.api_key_sid, "wrong"),
        basic("SK00000000000000000000000000000000", "x"),
        basic(&a.account_sid, "token"),
    ] {
        let response = client
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(code(response).await, (401, Some(20003)));
    }
}

#[tokio::test]
async fn accounts_keys_and_credentials_follow_twilios_rules() {
    let a = TestAccount::a();
    let standin = StandIn::start(support::registry(std::slice::from_ref(&a)))
        .await
        .unwrap();
    // Unsigned for brevity: PKCV itself is covered elsewhere; these are the API's rules.
    standin
        .update_registry(|r| r.set_enforcement(&a.account_sid, false))
        .await;
    let client = direct_client(&standin);
    let port = standin.addr().port();
    let api = |path: &str| format!("https://api.twilio.com:{port}{path}");
    let main = a.basic_auth();

    // A subaccount, and a key in it: the secret only on create.
    let sub: serde_json::Value = client
        .post(api("/2010-04-01/Accounts.json"))
        .header("authorization", &main)
        .form(&[("FriendlyName", "sub")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub_sid = sub["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        (sub["owner_account_sid"].as_str(), sub["status"].as_str()),
        (Some(a.account_sid.as_str()), Some("active"))
    );
    let key: serde_json::Value = client
        .post(api(&format!("/2010-04-01/Accounts/{sub_sid}/Keys.json")))
        .header("authorization", &main)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (key_sid, secret) = (
        key["sid"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    let fetched: serde_json::Value = client
        .get(api(&format!(
            "/2010-04-01/Accounts/{sub_sid}/Keys/{key_sid}.json"
        )))
        .header("authorization", &main)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        fetched.get("secret").is_none(),
        "a key's secret is shown only on create"
    );

    // The new key is Standard: it may not create accounts or keys (but the subaccount
    // enforces PKCV like its parent, so relax it to reach the rule).
    standin
        .update_registry(|r| r.set_enforcement(&sub_sid, false))
        .await;
    let standard = basic(&key_sid, &secret);
    let refused = client
        .post(api("/2010-04-01/Accounts.json"))
        .header("authorization", &standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(refused).await, (401, Some(20003)));

    // The subaccount cannot see its parent; the parent sees both.
    let parent = client
        .get(api(&format!("/2010-04-01/Accounts/{}.json", a.account_sid)))
        .header("authorization", &standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(parent).await, (404, Some(20404)));
    let page: serde_json::Value = client
        .get(api("/2010-04-01/Accounts.json"))
        .header("authorization", &main)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["accounts"].as_array().unwrap().len(), 2);
    assert!(page["next_page_uri"].is_null());

    // Public keys: listed with v1 paging; a bad PEM is refused.
    let credentials: serde_json::Value = client
        .get(format!(
            "https://accounts.twilio.com:{port}/v1/Credentials/PublicKeys"
        ))
        .header("authorization", &main)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credentials["meta"]["key"], "credentials");
    assert_eq!(
        credentials["credentials"][0]["sid"],
        a.credential_sid.as_str()
    );
    let bad = client
        .post(format!(
            "https://accounts.twilio.com:{port}/v1/Credentials/PublicKeys"
        ))
        .header("authorization", &main)
        .form(&[("PublicKey", "not a key")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Closing revokes the subaccount's keys.
    let closed = client
        .post(api(&format!("/2010-04-01/Accounts/{sub_sid}.json")))
        .header("authorization", &main)
        .form(&[("Status", "closed")])
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let after = client
        .get(api(&format!("/2010-04-01/Accounts/{sub_sid}.json")))
        .header("authorization", &standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(after).await, (401, Some(20003)));
}
