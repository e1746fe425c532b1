//! The slice of Twilio's REST API the stand-in emulates, with in-memory state, in the shapes
//! of Twilio's OpenAPI specs (twilio-oai `api.v2010.account`, `api.v2010.account.key`,
//! `accounts.v1.credential_public_key`): enough for the official SDKs' calls and for the
//! account-and-key workflow under PKCV.
//!
//! Rules it enforces as Twilio does: a caller acts on its own account or its subaccounts;
//! creating or changing accounts, API keys and public keys needs a Main API key; a key's
//! `secret` is shown only when it is created; list responses carry Twilio's paging fields and
//! nothing else (the SDKs find the records as the one non-paging key).
//!
//! Paths it does not emulate are echoed: a JSON summary of what was verified.

use http::StatusCode;
use serde_json::{json, Value};

use super::verify::{Account, ApiKey, Credential, Registry, Verified};
use crate::clock::unix_now;
use crate::sid::{random_hex, random_sid};

/// A request the emulation answers, already authenticated.
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) body: &'a [u8],
    /// The largest page the stand-in serves.
    pub(crate) max_page_size: usize,
}

/// An emulated response: status and JSON (`None` for an empty body).
pub(crate) type ApiResponse = (StatusCode, Option<Value>);

/// Messages created through the stand-in, by SID: (account, JSON).
pub(crate) type Messages = std::collections::BTreeMap<String, (String, Value)>;

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> ApiResponse {
    (
        status,
        Some(json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
}

fn not_found(path: &str) -> ApiResponse {
    error(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {path} was not found"),
    )
}

fn main_key_required() -> ApiResponse {
    error(
        StatusCode::UNAUTHORIZED,
        20003,
        "Authentication Error - only a Main API key may manage accounts and keys",
    )
}

fn missing(parameter: &str) -> ApiResponse {
    error(
        StatusCode::BAD_REQUEST,
        21201,
        format!("Missing required parameter {parameter}"),
    )
}

/// Answers `request` from the state, or `None` when the path is not emulated.
pub(crate) fn dispatch(
    registry: &mut Registry,
    messages: &mut Messages,
    caller: &Verified,
    request: &ApiRequest<'_>,
) -> Option<ApiResponse> {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let host = request.host.split(':').next().unwrap_or_default();
    let (guard, endpoint) = route(host, request.method, &segments)?;
    let call = Call::new(caller, request);
    // The guard runs before the method is looked at: a resource the caller cannot see is a
    // 404 whatever the method, as on Twilio.
    if !guard.admits(registry, messages, call.account()) {
        return Some(not_found(request.path));
    }
    Some(endpoint?.answer(registry, messages, &call))
}

const API: &str = "api.twilio.com";
const ACCOUNTS: &str = "accounts.twilio.com";

/// The route table: which endpoint a method and path shape name, and what the caller must be
/// able to see first. `None` when the path is not emulated (it is then echoed); a guarded
/// resource with an unemulated method is `Some((guard, None))`, so it is still a 404 when hidden.
fn route<'p>(
    host: &str,
    method: &str,
    segments: &[&'p str],
) -> Option<(Guard<'p>, Option<Endpoint<'p>>)> {
    use Endpoint as E;
    let routed = match (host, segments) {
        (API, ["2010-04-01", "Accounts.json"]) => match method {
            "GET" => (Guard::Open, Some(E::ListAccounts)),
            "POST" => (Guard::Open, Some(E::CreateAccount)),
            _ => return None,
        },
        (API, ["2010-04-01", "Accounts", file]) => {
            let sid = json_sid(file)?;
            let endpoint = match method {
                "GET" => Some(E::FetchAccount(sid)),
                "POST" => Some(E::UpdateAccount(sid)),
                _ => None,
            };
            (Guard::Account(sid), endpoint)
        }
        (API, ["2010-04-01", "Accounts", account, "Keys.json"]) => {
            let endpoint = match method {
                "GET" => Some(E::ListKeys(account)),
                "POST" => Some(E::CreateKey(account)),
                _ => None,
            };
            (Guard::Account(account), endpoint)
        }
        (API, ["2010-04-01", "Accounts", account, "Keys", file]) => {
            let sid = json_sid(file)?;
            let endpoint = match method {
                "GET" => Some(E::FetchKey(sid)),
                "DELETE" => Some(E::DeleteKey(sid)),
                _ => None,
            };
            (Guard::Key { account, sid }, endpoint)
        }
        (API, ["2010-04-01", "Accounts", account, "Messages.json"]) => match method {
            "POST" => (Guard::ActsOn(account), Some(E::CreateMessage(account))),
            _ => return None,
        },
        (API, ["2010-04-01", "Accounts", account, "Messages", file]) => {
            let sid = json_sid(file)?;
            let endpoint = match method {
                "GET" => Some(E::FetchMessage(sid)),
                "DELETE" => Some(E::DeleteMessage(sid)),
                _ => None,
            };
            (Guard::Message { account, sid }, endpoint)
        }
        (ACCOUNTS, ["v1", "Credentials", "PublicKeys"]) => match method {
            "GET" => (Guard::Open, Some(E::ListPublicKeys)),
            "POST" => (Guard::Open, Some(E::CreatePublicKey)),
            _ => return None,
        },
        (ACCOUNTS, ["v1", "Credentials", "PublicKeys", sid]) => {
            let endpoint = match method {
                "GET" => Some(E::FetchPublicKey(sid)),
                "DELETE" => Some(E::DeletePublicKey(sid)),
                _ => None,
            };
            (Guard::PublicKey(sid), endpoint)
        }
        _ => return None,
    };
    Some(routed)
}

/// The SID in a `{sid}.json` path segment.
fn json_sid(file: &str) -> Option<&str> {
    file.ends_with(".json")
        .then(|| file.trim_end_matches(".json"))
}

/// What the caller must be able to see before any method on a resource is answered.
#[derive(Debug, Clone, Copy)]
enum Guard<'p> {
    Open,
    /// An account the caller may act on (own, or a subaccount).
    ActsOn(&'p str),
    /// An existing account the caller may act on.
    Account(&'p str),
    /// An API key of `account`, which the caller may act on.
    Key {
        account: &'p str,
        sid: &'p str,
    },
    /// A message sent from `account`, which the caller may act on.
    Message {
        account: &'p str,
        sid: &'p str,
    },
    /// A public key of an account the caller may act on.
    PublicKey(&'p str),
}

impl Guard<'_> {
    fn admits(self, registry: &Registry, messages: &Messages, caller: &str) -> bool {
        match self {
            Guard::Open => true,
            Guard::ActsOn(account) => may_act_on(registry, caller, account),
            Guard::Account(sid) => {
                registry.accounts.contains_key(sid) && may_act_on(registry, caller, sid)
            }
            Guard::Key { account, sid } => {
                let owned = registry
                    .api_keys
                    .get(sid)
                    .is_some_and(|key| key.account_sid == account);
                owned && may_act_on(registry, caller, account)
            }
            Guard::Message { account, sid } => {
                may_act_on(registry, caller, account)
                    && messages.get(sid).is_some_and(|(owner, _)| owner == account)
            }
            Guard::PublicKey(sid) => registry
                .credentials
                .get(sid)
                .is_some_and(|credential| may_act_on(registry, caller, &credential.account_sid)),
        }
    }
}

/// One emulated endpoint, with the SIDs its path names.
#[derive(Debug, Clone, Copy)]
enum Endpoint<'p> {
    ListAccounts,
    CreateAccount,
    FetchAccount(&'p str),
    UpdateAccount(&'p str),
    ListKeys(&'p str),
    CreateKey(&'p str),
    FetchKey(&'p str),
    DeleteKey(&'p str),
    CreateMessage(&'p str),
    FetchMessage(&'p str),
    DeleteMessage(&'p str),
    ListPublicKeys,
    CreatePublicKey,
    FetchPublicKey(&'p str),
    DeletePublicKey(&'p str),
}

impl Endpoint<'_> {
    fn answer(
        self,
        registry: &mut Registry,
        messages: &mut Messages,
        call: &Call<'_>,
    ) -> ApiResponse {
        match self {
            Endpoint::ListAccounts => list_accounts(registry, call),
            Endpoint::CreateAccount => create_account(registry, call),
            Endpoint::FetchAccount(sid) => fetch_account(registry, sid),
            Endpoint::UpdateAccount(sid) => update_account(registry, sid, call),
            Endpoint::ListKeys(account) => list_keys(registry, account, call),
            Endpoint::CreateKey(account) => create_key(registry, account, call),
            Endpoint::FetchKey(sid) => fetch_key(registry, sid),
            Endpoint::DeleteKey(sid) => delete_key(registry, sid, call),
            Endpoint::CreateMessage(account) => create_message(messages, account, call),
            Endpoint::FetchMessage(sid) => fetch_message(messages, sid),
            Endpoint::DeleteMessage(sid) => delete_message(messages, sid),
            Endpoint::ListPublicKeys => list_public_keys(registry, call),
            Endpoint::CreatePublicKey => create_public_key(registry, call),
            Endpoint::FetchPublicKey(sid) => fetch_public_key(registry, sid),
            Endpoint::DeletePublicKey(sid) => delete_public_key(registry, sid, call),
        }
    }
}

/// An authenticated request, parsed once for every endpoint.
struct Call<'a> {
    caller: &'a Verified,
    path: &'a str,
    form: Vec<(String, String)>,
    query: Vec<(String, String)>,
    paging: Paging,
}

impl<'a> Call<'a> {
    fn new(caller: &'a Verified, request: &ApiRequest<'a>) -> Call<'a> {
        let form = form_urlencoded::parse(request.body).into_owned().collect();
        let query: Vec<(String, String)> = form_urlencoded::parse(request.query.as_bytes())
            .into_owned()
            .collect();
        let paging = Paging::from_query(&query, request.max_page_size);
        Call {
            caller,
            path: request.path,
            form,
            query,
            paging,
        }
    }

    /// The caller's own account.
    fn account(&self) -> &'a str {
        self.caller.account_sid.as_str()
    }

    /// A form parameter of the body.
    fn param(&self, name: &str) -> Option<&str> {
        lookup(&self.form, name)
    }

    /// A query parameter (list filters).
    fn filter(&self, name: &str) -> Option<&str> {
        lookup(&self.query, name)
    }
}

fn lookup<'v>(pairs: &'v [(String, String)], name: &str) -> Option<&'v str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn list_accounts(registry: &Registry, call: &Call<'_>) -> ApiResponse {
    let friendly = call.filter("FriendlyName");
    let status = call.filter("Status");
    let accounts: Vec<Value> = registry
        .accounts
        .iter()
        .filter(|(sid, _)| may_act_on(registry, call.account(), sid))
        .filter(|(_, account)| friendly.is_none_or(|name| account.friendly_name == name))
        .filter(|(_, account)| status.is_none_or(|status| account.status == status))
        .map(|(sid, account)| account_json(sid, account, None))
        .collect();
    v2010_page(
        "accounts",
        "/2010-04-01/Accounts.json",
        accounts,
        call.paging,
    )
}

fn create_account(registry: &mut Registry, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    let sid = random_sid("AC");
    // A subaccount inherits its parent's PKCV enforcement.
    let parent = registry
        .accounts
        .get(call.account())
        .map(|a| a.enforces_pkcv)
        .unwrap_or(true);
    let account = Account {
        friendly_name: call.param("FriendlyName").map_or_else(
            || format!("SubAccount Created at {}", unix_now()),
            str::to_owned,
        ),
        status: "active".into(),
        owner_account_sid: call.account().to_owned(),
        enforces_pkcv: parent,
        created: unix_now(),
    };
    let body = account_json(&sid, &account, Some(random_hex::<16>()));
    registry.accounts.insert(sid, account);
    (StatusCode::CREATED, Some(body))
}

fn fetch_account(registry: &Registry, sid: &str) -> ApiResponse {
    (
        StatusCode::OK,
        registry
            .accounts
            .get(sid)
            .map(|a| account_json(sid, a, None)),
    )
}

fn update_account(registry: &mut Registry, sid: &str, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    let new_status = call.param("Status");
    if let Some(refused) = new_status.and_then(|status| refuse_status(sid, status, call)) {
        return refused;
    }
    let Some(account) = registry.accounts.get_mut(sid) else {
        return not_found(call.path);
    };
    if let Some(status) = new_status {
        account.status = status.to_owned();
    }
    if let Some(name) = call.param("FriendlyName") {
        account.friendly_name = name.to_owned();
    }
    let body = account_json(sid, account, None);
    if new_status == Some("closed") {
        // Closing an account revokes its keys and credentials.
        registry.api_keys.retain(|_, key| key.account_sid != sid);
        registry
            .credentials
            .retain(|_, credential| credential.account_sid != sid);
    }
    (StatusCode::OK, Some(body))
}

/// Why account `sid` may not be moved to `status`, if it may not.
fn refuse_status(sid: &str, status: &str, call: &Call<'_>) -> Option<ApiResponse> {
    if !["active", "suspended", "closed"].contains(&status) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Invalid Status {status}"),
        ));
    }
    (sid == call.account()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            20001,
            "An account cannot change its own status",
        )
    })
}

fn list_keys(registry: &Registry, account: &str, call: &Call<'_>) -> ApiResponse {
    let keys = registry
        .api_keys
        .iter()
        .filter(|(_, key)| key.account_sid == account)
        .map(|(sid, key)| key_json(sid, key, false))
        .collect();
    v2010_page(
        "keys",
        &format!("/2010-04-01/Accounts/{account}/Keys.json"),
        keys,
        call.paging,
    )
}

fn create_key(registry: &mut Registry, account: &str, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    let sid = random_sid("SK");
    let key = ApiKey {
        account_sid: account.to_owned(),
        secret: random_hex::<16>(),
        friendly_name: call.param("FriendlyName").unwrap_or_default().to_owned(),
        main: false,
        created: unix_now(),
    };
    // The secret is shown once, on creation.
    let body = key_json(&sid, &key, true);
    registry.api_keys.insert(sid, key);
    (StatusCode::CREATED, Some(body))
}

fn fetch_key(registry: &Registry, sid: &str) -> ApiResponse {
    (
        StatusCode::OK,
        registry
            .api_keys
            .get(sid)
            .map(|key| key_json(sid, key, false)),
    )
}

fn delete_key(registry: &mut Registry, sid: &str, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    registry.api_keys.remove(sid);
    (StatusCode::NO_CONTENT, None)
}

fn create_message(messages: &mut Messages, account: &str, call: &Call<'_>) -> ApiResponse {
    let (Some(to), Some(body)) = (call.param("To"), call.param("Body")) else {
        return missing("To/Body");
    };
    let sid = random_sid("SM");
    let message = json!({
        "sid": sid,
        "account_sid": account,
        "to": to,
        "from": call.param("From"),
        "body": body,
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": "1",
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
    });
    messages.insert(sid, (account.to_owned(), message.clone()));
    (StatusCode::CREATED, Some(message))
}

fn fetch_message(messages: &Messages, sid: &str) -> ApiResponse {
    (
        StatusCode::OK,
        messages.get(sid).map(|(_, message)| message.clone()),
    )
}

fn delete_message(messages: &mut Messages, sid: &str) -> ApiResponse {
    messages.remove(sid);
    (StatusCode::NO_CONTENT, None)
}

fn list_public_keys(registry: &Registry, call: &Call<'_>) -> ApiResponse {
    let credentials = registry
        .credentials
        .iter()
        .filter(|(_, credential)| credential.account_sid == call.account())
        .map(|(sid, credential)| credential_json(sid, credential))
        .collect();
    v1_page(
        "credentials",
        "https://accounts.twilio.com/v1/Credentials/PublicKeys",
        credentials,
        call.paging,
    )
}

fn create_public_key(registry: &mut Registry, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    let Some(pem) = call.param("PublicKey") else {
        return missing("PublicKey");
    };
    let caller = call.account();
    let account = call.param("AccountSid").unwrap_or(caller).to_owned();
    if !registry.accounts.contains_key(&account) || !may_act_on(registry, caller, &account) {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            format!("AccountSid {account} is not a subaccount of {caller}"),
        );
    }
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            "PublicKey is not a PEM RSA public key",
        );
    };
    let sid = random_sid("CR");
    let credential = Credential {
        account_sid: account,
        friendly_name: call.param("FriendlyName").unwrap_or_default().to_owned(),
        public_key_pem: pem.to_owned(),
        key,
        created: unix_now(),
    };
    let body = credential_json(&sid, &credential);
    registry.credentials.insert(sid, credential);
    (StatusCode::CREATED, Some(body))
}

fn fetch_public_key(registry: &Registry, sid: &str) -> ApiResponse {
    (
        StatusCode::OK,
        registry
            .credentials
            .get(sid)
            .map(|c| credential_json(sid, c)),
    )
}

fn delete_public_key(registry: &mut Registry, sid: &str, call: &Call<'_>) -> ApiResponse {
    if !call.caller.main_key {
        return main_key_required();
    }
    registry.credentials.remove(sid);
    (StatusCode::NO_CONTENT, None)
}

/// A caller may act on its own account and on its subaccounts.
fn may_act_on(registry: &Registry, caller: &str, account: &str) -> bool {
    account == caller
        || registry
            .accounts
            .get(account)
            .is_some_and(|a| a.owner_account_sid == caller)
}

fn rfc2822(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default()
}

fn account_json(sid: &str, account: &Account, auth_token: Option<String>) -> Value {
    json!({
        "sid": sid,
        "friendly_name": account.friendly_name,
        "status": account.status,
        "owner_account_sid": account.owner_account_sid,
        "type": "Full",
        "auth_token": auth_token,
        "date_created": rfc2822(account.created),
        "date_updated": rfc2822(account.created),
        "uri": format!("/2010-04-01/Accounts/{sid}.json"),
        "subresource_uris": {
            "keys": format!("/2010-04-01/Accounts/{sid}/Keys.json"),
            "messages": format!("/2010-04-01/Accounts/{sid}/Messages.json"),
        },
    })
}

fn key_json(sid: &str, key: &ApiKey, with_secret: bool) -> Value {
    let mut body = json!({
        "sid": sid,
        "friendly_name": key.friendly_name,
        "date_created": rfc2822(key.created),
        "date_updated": rfc2822(key.created),
    });
    if with_secret {
        body["secret"] = json!(key.secret);
    }
    body
}

fn credential_json(sid: &str, credential: &Credential) -> Value {
    json!({
        "sid": sid,
        "account_sid": credential.account_sid,
        "friendly_name": credential.friendly_name,
        "date_created": time_iso(credential.created),
        "date_updated": time_iso(credential.created),
        "url": format!("https://accounts.twilio.com/v1/Credentials/PublicKeys/{sid}"),
    })
}

fn time_iso(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Which page of a list was asked for.
#[derive(Debug, Clone, Copy)]
struct Paging {
    page: usize,
    size: usize,
}

impl Paging {
    fn from_query(query: &[(String, String)], max_size: usize) -> Paging {
        let number = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        Paging {
            page: number("Page").unwrap_or(0),
            size: number("PageSize")
                .unwrap_or(max_size)
                .clamp(1, max_size.max(1)),
        }
    }

    /// This page's records, and whether another page follows.
    fn slice(self, records: Vec<Value>) -> (Vec<Value>, usize, bool) {
        let start = self.page.saturating_mul(self.size);
        let total = records.len();
        let records: Vec<Value> = records.into_iter().skip(start).take(self.size).collect();
        (records, start, start + self.size < total)
    }
}

/// A v2010 list page: the records under `key` and Twilio's paging fields, nothing else.
fn v2010_page(key: &str, uri: &str, records: Vec<Value>, paging: Paging) -> ApiResponse {
    let (records, start, more) = paging.slice(records);
    let link = |page: usize| format!("{uri}?PageSize={}&Page={page}", paging.size);
    let mut page = json!({
        "end": (start + records.len()).saturating_sub(1),
        "first_page_uri": link(0),
        "next_page_uri": more.then(|| link(paging.page + 1)),
        "page": paging.page,
        "page_size": paging.size,
        "previous_page_uri": (paging.page > 0).then(|| link(paging.page - 1)),
        "start": start,
        "uri": link(paging.page),
    });
    page[key] = Value::Array(records);
    (StatusCode::OK, Some(page))
}

/// A v1 list page with `meta`.
fn v1_page(key: &str, url: &str, records: Vec<Value>, paging: Paging) -> ApiResponse {
    let (records, _, more) = paging.slice(records);
    let link = |page: usize| format!("{url}?PageSize={}&Page={page}", paging.size);
    let mut page = json!({
        "meta": {
            "first_page_url": link(0),
            "key": key,
            "next_page_url": more.then(|| link(paging.page + 1)),
            "page": paging.page,
            "page_size": paging.size,
            "previous_page_url": (paging.page > 0).then(|| link(paging.page - 1)),
            "url": link(paging.page),
        },
    });
    page[key] = Value::Array(records);
    (StatusCode::OK, Some(page))
}
