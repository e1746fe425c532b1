//! The stand-in's own behaviour, checked directly (no proxy): it must refuse what Twilio
//! refuses, or the end-to-end tests that rely on it prove nothing.

use std::time::Duration;

use pkcv_standin::StandIn;

use crate::support::{basic, registry, TestAccount};

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
    let standin = StandIn::start(registry(std::slice::from_ref(&a)))
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
    let standin = StandIn::start(registry(std::slice::from_ref(&a)))
        .await
        .unwrap();
    // Unsigned for brevity: PKCV itself is covered elsewhere; these are the API's rules.
    standin
        .update_registry(|r| r.set_enforcement(&a.account_sid, false))
        .await;
    let api = Api {
        client: direct_client(&standin),
        port: standin.addr().port(),
        main: a.basic_auth(),
    };

    let (sub_sid, key_sid, secret) = a_subaccount_and_a_key_in_it(&api, &a).await;

    // The new key is Standard: it may not create accounts or keys (but the subaccount
    // enforces PKCV like its parent, so relax it to reach the rule).
    standin
        .update_registry(|r| r.set_enforcement(&sub_sid, false))
        .await;
    let standard = basic(&key_sid, &secret);
    standard_keys_and_subaccounts_see_less(&api, &a, &standard).await;
    public_keys_are_listed_and_checked(&api, &a).await;

    // Closing revokes the subaccount's keys.
    let closed = api
        .client
        .post(api.url(&format!("/2010-04-01/Accounts/{sub_sid}.json")))
        .header("authorization", &api.main)
        .form(&[("Status", "closed")])
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let after = api
        .client
        .get(api.url(&format!("/2010-04-01/Accounts/{sub_sid}.json")))
        .header("authorization", &standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(after).await, (401, Some(20003)));
}

/// The stand-in's API, reached directly, with the Main key's credentials.
struct Api {
    client: reqwest::Client,
    port: u16,
    main: String,
}

impl Api {
    /// `https://api.twilio.com:port` + `path`.
    fn url(&self, path: &str) -> String {
        format!("https://api.twilio.com:{}{path}", self.port)
    }

    /// `https://accounts.twilio.com:port/v1/Credentials/PublicKeys`.
    fn public_keys(&self) -> String {
        format!(
            "https://accounts.twilio.com:{}/v1/Credentials/PublicKeys",
            self.port
        )
    }

    /// A JSON response to `request` sent with the Main key.
    async fn json(&self, request: reqwest::RequestBuilder) -> serde_json::Value {
        request
            .header("authorization", &self.main)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A subaccount of `a`, and a key in it: the secret only on create. Returns the subaccount,
/// the key and its secret.
async fn a_subaccount_and_a_key_in_it(api: &Api, a: &TestAccount) -> (String, String, String) {
    let sub = api
        .json(
            api.client
                .post(api.url("/2010-04-01/Accounts.json"))
                .form(&[("FriendlyName", "sub")]),
        )
        .await;
    let sub_sid = sub["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        (sub["owner_account_sid"].as_str(), sub["status"].as_str()),
        (Some(a.account_sid.as_str()), Some("active"))
    );
    let key = api
        .json(
            api.client
                .post(api.url(&format!("/2010-04-01/Accounts/{sub_sid}/Keys.json"))),
        )
        .await;
    let (key_sid, secret) = (
        key["sid"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    let fetched = api
        .json(api.client.get(api.url(&format!(
            "/2010-04-01/Accounts/{sub_sid}/Keys/{key_sid}.json"
        ))))
        .await;
    assert!(
        fetched.get("secret").is_none(),
        "a key's secret is shown only on create"
    );
    (sub_sid, key_sid, secret)
}

/// A Standard key may not create accounts; the subaccount cannot see its parent; the parent
/// sees both.
async fn standard_keys_and_subaccounts_see_less(api: &Api, a: &TestAccount, standard: &str) {
    let refused = api
        .client
        .post(api.url("/2010-04-01/Accounts.json"))
        .header("authorization", standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(refused).await, (401, Some(20003)));

    let parent = api
        .client
        .get(api.url(&format!("/2010-04-01/Accounts/{}.json", a.account_sid)))
        .header("authorization", standard)
        .send()
        .await
        .unwrap();
    assert_eq!(code(parent).await, (404, Some(20404)));
    let page = api
        .json(api.client.get(api.url("/2010-04-01/Accounts.json")))
        .await;
    assert_eq!(page["accounts"].as_array().unwrap().len(), 2);
    assert!(page["next_page_uri"].is_null());
}

/// Public keys: listed with v1 paging; a bad PEM is refused.
async fn public_keys_are_listed_and_checked(api: &Api, a: &TestAccount) {
    let credentials = api.json(api.client.get(api.public_keys())).await;
    assert_eq!(credentials["meta"]["key"], "credentials");
    assert_eq!(
        credentials["credentials"][0]["sid"],
        a.credential_sid.as_str()
    );
    let bad = api
        .client
        .post(api.public_keys())
        .header("authorization", &api.main)
        .form(&[("PublicKey", "not a key")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
