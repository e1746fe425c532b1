//! `pkcv-proxy doctor`: the whole setup checked against Twilio, one check at a time, each
//! with what to do when it fails.
//!
//! Everything goes through the proxy's own parts, so a check that passes here passes for
//! `serve`: the accounts load through [`Accounts::from_config`] (the one loader), the network
//! checks dial with the upstream settings (`connect_to`, `extra_ca_file`), and every signed
//! request is resolved and signed by [`RequestSigner`] and sent by [`Upstream`]. The proxy
//! holds private keys, not API keys: the signed checks use the Main key the workflow commands
//! take from the environment, or the per-account secret files `subaccount create` writes;
//! without them those checks are reported as not run. No check's text holds a secret.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{AccountConfig, Config};
use crate::egress::Dialer;
use crate::keys::{dir, Account, Accounts};
use crate::metrics::Metrics;
use crate::rejection::twilio_code;
use crate::sign::RequestSigner;
use crate::upstream::{self, Upstream};

/// Twilio's REST host: every account answers there.
const API_HOST: &str = "api.twilio.com";
/// Where public keys (credentials) are listed.
const ACCOUNTS_HOST: &str = "accounts.twilio.com";
/// The most of an answer's body a check reads.
const MAX_ANSWER: usize = 64 * 1024;
/// The most of a response head the network check reads.
const MAX_HEAD: usize = 16 * 1024;
/// A clock difference worth a note (as the running proxy warns).
const SKEW_NOTE: f64 = 30.0;
/// Beyond this, every token is refused: the token window is 300 s.
const SKEW_FAIL: f64 = 300.0;

/// The Main API key, from the environment the workflow commands read. Its `Debug` leaves the
/// secret out.
#[derive(Clone)]
pub struct MainCredentials {
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: String,
    /// `TWILIO_MAIN_KEY`.
    pub api_key_sid: String,
    secret: String,
}

impl MainCredentials {
    /// The Main key from its parts.
    pub fn new(account_sid: &str, api_key_sid: &str, secret: &str) -> MainCredentials {
        MainCredentials {
            account_sid: account_sid.to_owned(),
            api_key_sid: api_key_sid.to_owned(),
            secret: secret.to_owned(),
        }
    }
}

impl std::fmt::Debug for MainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainCredentials")
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key_sid)
            .finish_non_exhaustive()
    }
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed: `advice` says what to do.
    Failed,
    /// It could not run (no credentials): `advice` says how to supply them.
    NotRun,
}

impl Outcome {
    /// `passed`, `failed` or `not_run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::NotRun => "not_run",
        }
    }
}

/// One check and its result. Nothing in it is secret.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked (`config`, `accounts`, `upstream api.twilio.com`, `clock`,
    /// `signed call`, `credential`).
    pub name: String,
    /// The account it is about, if any.
    pub account: Option<String>,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do, when it did not pass.
    pub advice: Option<String>,
    /// Twilio's error code, when Twilio refused.
    pub twilio_code: Option<u32>,
}

impl Check {
    fn new(name: &str, account: Option<&str>, outcome: Outcome, detail: String) -> Check {
        Check {
            name: name.to_owned(),
            account: account.map(str::to_owned),
            outcome,
            detail,
            advice: None,
            twilio_code: None,
        }
    }

    /// A check that passed.
    pub fn passed(name: &str, account: Option<&str>, detail: String) -> Check {
        Check::new(name, account, Outcome::Passed, detail)
    }

    /// A check that failed, with what to do.
    pub fn failed(name: &str, account: Option<&str>, detail: String, advice: &str) -> Check {
        Check::new(name, account, Outcome::Failed, detail).advise(advice)
    }

    fn not_run(name: &str, account: Option<&str>, detail: String, advice: String) -> Check {
        Check::new(name, account, Outcome::NotRun, detail).advise(&advice)
    }

    fn advise(mut self, advice: &str) -> Check {
        self.advice = Some(advice.to_owned());
        self
    }

    /// The check as one JSON object (`--json`).
    pub fn to_json(&self) -> Value {
        json!({
            "check": self.name,
            "account": self.account,
            "result": self.outcome.as_str(),
            "detail": self.detail,
            "advice": self.advice,
            "twilio_code": self.twilio_code,
        })
    }
}

/// What `doctor` checks with: the config, the Main key if given, and one account if asked.
#[derive(Debug)]
pub struct Doctor<'a> {
    /// The loaded config.
    pub config: &'a Config,
    /// The Main key, when the environment gives one.
    pub main: Option<MainCredentials>,
    /// Only this account (`--account`).
    pub only: Option<String>,
}

impl Doctor<'_> {
    /// Runs every check, in order: accounts, the network to each host, the clock, then per
    /// account the signed call and the credential.
    pub async fn run(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let accounts = match Accounts::from_config(self.config) {
            Ok(accounts) => {
                let backends: Vec<String> = accounts
                    .iter()
                    .map(|a| format!("{} ({})", a.account_sid, a.minter))
                    .collect();
                checks.push(Check::passed(
                    "accounts",
                    None,
                    format!("{} loaded: {}", accounts.len(), backends.join(", ")),
                ));
                Some(accounts)
            }
            Err(err) => {
                checks.push(Check::failed(
                    "accounts",
                    None,
                    err.to_string(),
                    "fix the account entry or its key (`pkcv-proxy check-config` shows the same)",
                ));
                None
            }
        };
        let reachable = self.network(&mut checks).await;
        let clock_at = checks.len();
        // Twilio's `Date` from a signed answer; else from one unauthenticated `HEAD /`.
        let mut date = None;
        if let Some(accounts) = accounts {
            date = self.accounts(&accounts, &mut checks).await;
        }
        if date.is_none() && reachable {
            date = probe_date(self.config, API_HOST).await;
        }
        checks.insert(clock_at, clock(date));
        checks
    }

    /// DNS, TCP and TLS to Twilio's hosts; true when the REST host was reached.
    async fn network(&self, checks: &mut Vec<Check>) -> bool {
        let mut hosts = vec![API_HOST];
        if self.main.is_some() {
            hosts.push(ACCOUNTS_HOST);
        }
        let mut reachable = false;
        for host in hosts {
            let check = reach(self.config, host).await;
            reachable |= host == API_HOST && check.outcome == Outcome::Passed;
            checks.push(check);
        }
        reachable
    }

    /// The per-account checks; the `Date` of the first signed answer.
    async fn accounts(&self, accounts: &Accounts, checks: &mut Vec<Check>) -> Option<SystemTime> {
        let configured = dir::configured_accounts(self.config).unwrap_or_default();
        let mut selected: Vec<&Arc<Account>> = accounts
            .iter()
            .filter(|a| {
                self.only
                    .as_deref()
                    .is_none_or(|only| a.account_sid == only)
            })
            .collect();
        selected.sort_by(|a, b| a.account_sid.cmp(&b.account_sid));
        if let (Some(only), true) = (&self.only, selected.is_empty()) {
            checks.push(Check::failed(
                "account",
                Some(only),
                format!("{only} is not configured on this proxy"),
                "add it ([[accounts]] or a file in accounts_dir), or name a configured account",
            ));
            return None;
        }
        let sender = match Sender::new(self.config) {
            Ok(sender) => sender,
            Err(err) => {
                checks.push(Check::failed(
                    "upstream client",
                    None,
                    err,
                    "fix [upstream] (extra_ca_file)",
                ));
                return None;
            }
        };
        let mut date = None;
        for account in selected {
            let entry = configured
                .iter()
                .find(|c| c.account_sid == account.account_sid);
            let (check, answered) = self.signed_call(&sender, account, entry).await;
            checks.push(check);
            date = date.or(answered);
            checks.push(self.credential(&sender, account, accounts).await);
        }
        date
    }

    /// The API key that signs as `account`: the Main key for the main account, else the
    /// account's first listed key with the secret `subaccount create` wrote.
    fn api_key(
        &self,
        account: &Account,
        entry: Option<&AccountConfig>,
    ) -> Result<(String, String, String), String> {
        if let Some(main) = self
            .main
            .as_ref()
            .filter(|m| m.account_sid == account.account_sid)
        {
            let source = "the Main key (TWILIO_MAIN_KEY)".to_owned();
            return Ok((main.api_key_sid.clone(), main.secret.clone(), source));
        }
        let accounts_dir = self.config.accounts_dir.as_deref().unwrap_or(".".as_ref());
        let candidates =
            crate::workflow::secret_file_candidates(accounts_dir, &account.account_sid, entry);
        let shown: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        let how = format!(
            "for the main account set TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY and TWILIO_MAIN_SECRET; for this account list its API key first in api_key_sids and put its secret in {} (as `subaccount create` writes it)",
            shown.join(" or ")
        );
        let Some(key) = account.api_key_sids.first() else {
            return Err(how);
        };
        let found = candidates.iter().find_map(|path| {
            crate::files::read_bounded(path)
                .ok()
                .map(|bytes| (path, bytes))
        });
        match found {
            Some((path, bytes)) => {
                let secret = String::from_utf8_lossy(&bytes).trim().to_owned();
                Ok((
                    key.clone(),
                    secret,
                    format!("{key} (secret in {})", path.display()),
                ))
            }
            None => Err(how),
        }
    }
}

/// Signs and sends as `serve` does.
struct Sender {
    signer: RequestSigner,
    upstream: Upstream,
}

/// A signed request's answer: status, `Date`, body (at most [`MAX_ANSWER`]).
struct Answer {
    status: StatusCode,
    date: Option<SystemTime>,
    body: Bytes,
}

impl Sender {
    fn new(config: &Config) -> Result<Sender, String> {
        // Doctor's signatures are not the running proxy's: nothing exports these metrics.
        let metrics = Arc::new(Metrics::new());
        Ok(Sender {
            signer: RequestSigner::new(config, metrics.clone()).map_err(|e| e.to_string())?,
            upstream: Upstream::new(&config.upstream, metrics).map_err(|e| e.to_string())?,
        })
    }

    /// `GET url` with the API key, signed as `account` (with `api_key` allowed to sign for
    /// it, as the workflow lets the Main key sign for its own account).
    async fn get(&self, account: &Account, url: &str, key: (&str, &str)) -> Result<Answer, String> {
        let mut allowed = account.api_key_sids.clone();
        if !allowed.is_empty() && !allowed.iter().any(|k| k == key.0) {
            allowed.push(key.0.to_owned());
        }
        let one = Accounts::new([Account::new(
            &account.account_sid,
            &account.credential_sid,
            allowed,
            account.minter.clone(),
        )])
        .map_err(|e| e.to_string())?;
        let authorization = format!("Basic {}", STANDARD.encode(format!("{}:{}", key.0, key.1)));
        let (parts, ()) = Request::get(url)
            .header("authorization", authorization)
            .header("accept", "application/json")
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        let target = self
            .signer
            .resolve(&one, &parts, None)
            .map_err(|e| e.to_string())?;
        let signed = self
            .signer
            .sign(parts, Arc::new(target), crate::body::hashed(Bytes::new()))
            .await
            .map_err(|e| crate::error::ProxyError::from(e).to_string())?;
        let response = self
            .upstream
            .send(signed)
            .await
            .map_err(|failure| failure.error.to_string())?;
        let status = response.status();
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Answer { status, date, body })
    }
}

impl Doctor<'_> {
    /// The signed read-only call that proves key, credential and API key together.
    async fn signed_call(
        &self,
        sender: &Sender,
        account: &Account,
        entry: Option<&AccountConfig>,
    ) -> (Check, Option<SystemTime>) {
        const NAME: &str = "signed call";
        let sid = account.account_sid.as_str();
        let (key, secret, source) = match self.api_key(account, entry) {
            Ok(found) => found,
            Err(how) => {
                let detail = "no API key credentials for this account".into();
                return (Check::not_run(NAME, Some(sid), detail, how), None);
            }
        };
        let url = format!("https://{API_HOST}/2010-04-01/Accounts/{sid}.json");
        let answer = match sender.get(account, &url, (&key, &secret)).await {
            Ok(answer) => answer,
            Err(err) => {
                let detail = format!("GET {url}: {err}");
                let check = Check::failed(NAME, Some(sid), detail, "see the upstream checks above");
                return (check, None);
            }
        };
        if answer.status.is_success() {
            let check = Check::passed(
                NAME,
                Some(sid),
                format!(
                    "Twilio accepted GET /2010-04-01/Accounts/{sid}.json signed with {} and {source}: the key, the credential and the API key work together",
                    account.credential_sid
                ),
            );
            return (check, answer.date);
        }
        let credential = account.credential_sid.as_str();
        let signer = &account.minter;
        let check = refused(NAME, sid, &answer, |code| {
            match code {
            20003 => format!(
                "Twilio does not accept {source}: the key was deleted or the secret is wrong"
            ),
            20151 => format!(
                "the private key ({signer}) is not the public key registered as {credential}, or {credential} is not registered in {sid}"
            ),
            20153 => format!("{key} does not belong to {sid}, or either is suspended"),
            20155 | 20156 => {
                "this machine's clock and Twilio's differ: see the clock check".to_owned()
            }
            _ => String::new(),
        }
        });
        (check, answer.date)
    }

    /// With the Main key: the account's credential exists.
    async fn credential(&self, sender: &Sender, account: &Account, accounts: &Accounts) -> Check {
        const NAME: &str = "credential";
        let sid = account.account_sid.as_str();
        let credential = account.credential_sid.as_str();
        let Some(main) = &self.main else {
            return Check::not_run(
                NAME,
                Some(sid),
                format!("{credential} not looked up: no Main key"),
                "set TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY and TWILIO_MAIN_SECRET (the Main API key, as `subaccount` and `keys` take it)".into(),
            );
        };
        let Some(main_account) = accounts.get(&main.account_sid) else {
            return Check::failed(
                NAME,
                Some(sid),
                format!("the main account {} is not configured, so the Main key's request cannot be signed", main.account_sid),
                "configure the main account ([[accounts]] or accounts_dir) with its credential_sid and private key",
            );
        };
        let url = format!("https://{ACCOUNTS_HOST}/v1/Credentials/PublicKeys/{credential}");
        let key = (main.api_key_sid.as_str(), main.secret.as_str());
        match sender.get(main_account, &url, key).await {
            Ok(answer) if answer.status.is_success() => Check::passed(
                NAME,
                Some(sid),
                format!("{credential} is registered (Twilio returns no key material: a different key shows as 20151 on the signed call)"),
            ),
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => Check::failed(
                NAME,
                Some(sid),
                format!("{credential} is not a public key of {sid}: credential_sid is wrong, or the public key was never uploaded or was deleted"),
                "upload the public key (`pkcv-proxy keygen` prints it) and put the CR… Twilio returns in credential_sid",
            ),
            Ok(answer) => refused(NAME, sid, &answer, |_| String::new()),
            Err(err) => Check::failed(NAME, Some(sid), format!("GET {url}: {err}"), "see the upstream checks above"),
        }
    }
}

/// A check failed with Twilio's answer: its code, the table's advice, and the likely cause
/// in this setup (from `cause`, when it knows one).
fn refused(name: &str, account: &str, answer: &Answer, cause: impl Fn(u32) -> String) -> Check {
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let code = json
        .as_ref()
        .and_then(|j| j.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok());
    let status = answer.status.as_u16();
    let mut detail = match code {
        Some(code) => format!("Twilio answered {status} with code {code}"),
        None => format!("Twilio answered {status}"),
    };
    let entry = code.and_then(twilio_code);
    if let Some(entry) = entry {
        detail.push_str(&format!(" ({}): {}", entry.name, entry.meaning));
    }
    let likely = code.map(&cause).unwrap_or_default();
    if !likely.is_empty() {
        detail.push_str(&format!("; here: {likely}"));
    }
    let advice = match (entry, code) {
        (Some(entry), _) => entry.action.to_owned(),
        (None, Some(code)) => format!("see https://www.twilio.com/docs/errors/{code}"),
        (None, None) => "see the proxy's log and Twilio's status page".to_owned(),
    };
    let mut check = Check::failed(name, Some(account), detail, &advice);
    check.twilio_code = code;
    check
}

/// The clock against Twilio's `Date`.
fn clock(date: Option<SystemTime>) -> Check {
    const NAME: &str = "clock";
    let Some(date) = date else {
        return Check::not_run(
            NAME,
            None,
            "Twilio's Date was not seen".into(),
            "make the upstream reachable (see above)".into(),
        );
    };
    let skew = crate::clock_skew::skew_seconds(SystemTime::now(), date);
    let detail = format!("this machine's clock minus Twilio's Date: {skew:+.0} s");
    if skew.abs() > SKEW_FAIL {
        let advice = if skew > 0.0 {
            "this clock is ahead (Twilio answers 20155): fix NTP"
        } else {
            "this clock is behind (Twilio answers 20156): fix NTP"
        };
        return Check::failed(
            NAME,
            None,
            format!("{detail}: beyond the 300 s token window, every token is refused"),
            advice,
        );
    }
    if skew.abs() > SKEW_NOTE {
        return Check::passed(
            NAME,
            None,
            format!("{detail} (within the window, but fix NTP)"),
        );
    }
    Check::passed(NAME, None, detail)
}

mod reach;
use reach::{probe_date, reach};

/// What a run of checks adds up to (`main` turns it into 0, 2 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed.
    AllPassed,
    /// None failed, but some could not run (no credentials).
    SomeNotRun,
    /// At least one failed.
    SomeFailed,
}

/// The verdict on `checks`.
pub fn verdict(checks: &[Check]) -> Verdict {
    if checks.iter().any(|c| c.outcome == Outcome::Failed) {
        Verdict::SomeFailed
    } else if checks.iter().any(|c| c.outcome == Outcome::NotRun) {
        Verdict::SomeNotRun
    } else {
        Verdict::AllPassed
    }
}

#[cfg(test)]
mod tests;
