//! The official SDKs' own outputs (`tests/vectors`), reproduced byte for byte.

use crate::support::{canonical_vectors, registry, test_private_key, token_vectors, TestAccount};
use http::Method;
use pkcv_proxy::canonical::{body_hash, CanonicalRequest, SIGNED_HEADERS};
use pkcv_proxy::normalize::{normalize_path, normalize_query};
use pkcv_proxy::signing_key::{Algorithm, Key};
use pkcv_proxy::token::{Claims, TokenMinter};
use pkcv_standin::canonical::{java_canonical_request, ReceivedRequest};
use pkcv_standin::verify::{verify_request, verify_token};

#[test]
fn every_vector_is_reproduced_by_the_proxy() {
    let vectors = canonical_vectors();
    assert_eq!(vectors.signed_headers.join(";"), SIGNED_HEADERS);
    assert!(vectors.cases.len() >= 18, "the vector file shrank");
    for case in &vectors.cases {
        // The SDKs' wire form is already a fixed point of the proxy's normalization, so the
        // proxy forwards exactly what the SDK would have sent.
        assert_eq!(
            normalize_path(&case.path).unwrap(),
            case.path,
            "{}",
            case.description
        );
        assert_eq!(
            normalize_query(&case.query).unwrap(),
            case.query,
            "{}",
            case.description
        );

        let body = case.body();
        let method: Method = case.method.parse().unwrap();
        let request = CanonicalRequest {
            method: method.as_str(),
            path: &case.path,
            query: &case.query,
            authorization: case.header("Authorization"),
            host: case.header("Host"),
            body_hash: body_hash(&body),
        };
        assert_eq!(
            request.to_canonical_string(),
            case.canonical_request,
            "{}",
            case.description
        );
        assert_eq!(request.hash().as_str(), case.rqh, "{}", case.description);
        assert_eq!(case.hrh, SIGNED_HEADERS);
    }
}

#[test]
fn every_vector_is_reproduced_by_the_stand_ins_java_port() {
    for case in &canonical_vectors().cases {
        let body = case.body();
        let received = ReceivedRequest {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            headers: case
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: &body,
        };
        let canonical = java_canonical_request(&received, &["authorization", "host"]).unwrap();
        assert_eq!(canonical, case.canonical_request, "{}", case.description);
    }
}

#[test]
fn sdk_tokens_verify_at_their_instant_and_expire_301_seconds_later() {
    let vectors = canonical_vectors();
    let registry = registry(&[TestAccount::a()]);
    let tokens = token_vectors();
    assert!(!tokens.tokens.is_empty());
    for token in &tokens.tokens {
        let case = vectors
            .cases
            .iter()
            .find(|c| c.description == token.description)
            .unwrap();
        assert_eq!(token.rqh, case.rqh);

        let claims = verify_token(&registry, &token.token, token.minted_at)
            .unwrap_or_else(|e| panic!("{}: {e}", token.description));
        assert_eq!(claims.rqh, case.rqh);
        assert_eq!(claims.hrh, case.hrh);
        assert_eq!(claims.iss, vectors.api_key_sid);
        assert_eq!(claims.sub, vectors.account_sid);
        assert_eq!(claims.nbf, token.minted_at);

        let expired = verify_token(&registry, &token.token, token.minted_at + 301).unwrap_err();
        assert_eq!(expired.code, 20156, "{}: {expired}", token.description);

        // The whole request, as the SDK sent it, passes the stand-in's end-to-end check.
        let body = case.body();
        let mut headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        headers.push(("twilio-client-validation".into(), token.token.clone()));
        let received = ReceivedRequest {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            headers,
            body: &body,
        };
        verify_request(&registry, &received, token.minted_at).unwrap();

        // One byte changed in the query and the hash no longer matches: 70156.
        let tampered_query = format!("{}&x=1", case.query);
        let tampered = ReceivedRequest {
            query: &tampered_query,
            ..received
        };
        assert_eq!(
            verify_request(&registry, &tampered, token.minted_at)
                .unwrap_err()
                .code,
            70156
        );
    }
}

#[test]
fn proxy_tokens_equal_the_sdk_tokens_byte_for_byte() {
    let vectors = canonical_vectors();
    let account = TestAccount::a();
    let signer = TokenMinter::from_pem_file(
        &account.private_key_file,
        &vectors.credential_sid,
        Algorithm::Rs256,
    )
    .unwrap();
    for token in &token_vectors().tokens {
        let case = vectors
            .cases
            .iter()
            .find(|c| c.description == token.description)
            .unwrap();
        let body = case.body();
        let hash = CanonicalRequest {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            authorization: case.header("Authorization"),
            host: case.header("Host"),
            body_hash: body_hash(&body),
        }
        .hash();
        let unsigned = signer.unsigned(&Claims {
            api_key_sid: &vectors.api_key_sid,
            account_sid: &vectors.account_sid,
            request_hash: &hash,
            issued_at: token.minted_at,
            ttl_secs: 300,
        });
        let Key::Inline(key) = signer.key() else {
            panic!("a PEM key signs inline")
        };
        let signature = key.sign(Algorithm::Rs256, unsigned.input()).unwrap();
        let minted = unsigned.finish(&signature);
        // RS256 is deterministic: same key, same bytes in, same token out.
        assert_eq!(minted, token.token, "{}", token.description);
    }
}

#[test]
fn forged_and_malformed_tokens_are_rejected() {
    let registry = registry(&[TestAccount::a()]);
    let token = &token_vectors().tokens[0];
    let at = token.minted_at;
    let mut parts: Vec<String> = token.token.split('.').map(String::from).collect();

    // A flipped signature byte.
    let mut forged = parts.clone();
    let replacement = if forged[2].starts_with('A') { "B" } else { "A" };
    forged[2].replace_range(0..1, replacement);
    assert_eq!(
        verify_token(&registry, &forged.join("."), at)
            .unwrap_err()
            .code,
        20151
    );

    // A header with another cty.
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    parts[0] = URL_SAFE_NO_PAD.encode(
        r#"{"alg":"RS256","cty":"other","kid":"CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d","typ":"JWT"}"#,
    );
    assert_eq!(
        verify_token(&registry, &parts.join("."), at)
            .unwrap_err()
            .code,
        20152
    );
    assert_eq!(
        verify_token(&registry, "garbage", at).unwrap_err().code,
        20152
    );

    // Not yet valid.
    assert_eq!(
        verify_token(&registry, &token.token, at - 1)
            .unwrap_err()
            .code,
        20155
    );
}

/// A token signed with the test key over arbitrary claims, as a misbehaving client might.
fn craft(claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(test_private_key()).unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.cty = Some("twilio-pkrv;v=1".into());
    header.kid = Some(TestAccount::a().credential_sid);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[test]
fn issuer_subject_and_lifetime_are_checked() {
    let vectors = canonical_vectors();
    let registry = registry(&[TestAccount::a()]);
    let case = &vectors.cases[0];
    let claims = |iss: &str, sub: &str, nbf: u64, exp: u64| serde_json::json!({"hrh": "authorization;host", "rqh": case.rqh, "iss": iss, "sub": sub, "nbf": nbf, "exp": exp});
    let now = 1_800_000_000;
    let request = |token: String| {
        let mut headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        headers.push(("twilio-client-validation".into(), token));
        headers
    };
    let verify = |token: String| {
        let headers = request(token);
        let received = ReceivedRequest {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            headers,
            body: b"",
        };
        verify_request(&registry, &received, now)
            .map(|_| ())
            .map_err(|r| r.code)
    };
    let (sk, ac) = (vectors.api_key_sid.as_str(), vectors.account_sid.as_str());
    assert_eq!(verify(craft(claims(sk, ac, now, now + 300))), Ok(()));
    // iss is not the request's API key.
    assert_eq!(
        verify(craft(claims(
            "SK00000000000000000000000000000000",
            ac,
            now,
            now + 300
        ))),
        Err(20153)
    );
    // sub is not the credential's account.
    assert_eq!(
        verify(craft(claims(
            sk,
            "AC00000000000000000000000000000000",
            now,
            now + 300
        ))),
        Err(20153)
    );
    // Longer than Twilio's 300 s.
    assert_eq!(verify(craft(claims(sk, ac, now, now + 301))), Err(20157));
    // Signed for another request.
    let mut other = claims(sk, ac, now, now + 300);
    other["rqh"] = serde_json::json!("0".repeat(64));
    assert_eq!(verify(craft(other)), Err(70156));
}
