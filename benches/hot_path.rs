//! The per-request hot path: normalize + canonicalize + hash by body size, and minting the
//! token per algorithm and key size beside the raw aws-lc-rs signature of the same key and
//! the same signing input, so what minting adds above the RSA limit is visible.
//!
//! `mint/pkcv-proxy` (key parsed once) against `jsonwebtoken` (parses the key on every
//! encode) is the measurement behind minting tokens in `token.rs`. Results: BENCHMARKS.md.
//!
//! Self-contained: the 2048-bit key is the repository's throwaway test key, the 3072- and
//! 4096-bit keys are generated when the bench starts.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pkcv_proxy::canonical::{BodyHasher, CanonicalRequest, HexDigest};
use pkcv_proxy::normalize::{normalize_path, normalize_query};
use pkcv_proxy::signing_key::Algorithm;
use pkcv_proxy::signing_key::{Key, PemKey};
use pkcv_proxy::token::{Claims, TokenMinter};
use std::hint::black_box;
use std::sync::Arc;

const AUTH: &str = "Basic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzpub3QtYS1yZWFsLXNlY3JldA==";
const KEY_2048: &str = include_str!("../tests/fixtures/rsa-2048-pkcs1.pem");
const CREDENTIAL: &str = "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d";
const PATH: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json";

fn canonicalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalize+hash");
    let query = "PageSize=50&DateSent%3E=2026-01-01&To=%2B14155550100";
    group.bench_function("GET with query", |b| {
        b.iter(|| {
            let path = normalize_path(black_box(PATH)).unwrap();
            let query = normalize_query(black_box(query)).unwrap();
            let request = CanonicalRequest {
                method: "GET",
                path: &path,
                query: &query,
                authorization: AUTH,
                host: "api.twilio.com",
                body_hash: None,
            };
            black_box(request.hash())
        })
    });
    // 0 B first: the throughput set for the sizes after it cannot be unset.
    for size in [0usize, 200, 4 * 1024, 64 * 1024, 1024 * 1024] {
        if size > 0 {
            group.throughput(Throughput::Bytes(size as u64));
        }
        let body = vec![b'x'; size];
        group.bench_with_input(
            BenchmarkId::new("POST body bytes", size),
            &body,
            |b, body| b.iter(|| black_box(post_hash(black_box(body)))),
        );
    }
    group.finish();
}

/// A POST: normalize the path, hash the body in 16 KiB chunks as hyper delivers them, hash
/// the canonical request.
fn post_hash(body: &[u8]) -> HexDigest {
    let path = normalize_path(PATH).unwrap();
    let mut hasher = BodyHasher::default();
    for chunk in body.chunks(16 * 1024) {
        hasher.update(chunk);
    }
    CanonicalRequest {
        method: "POST",
        path: &path,
        query: "",
        authorization: AUTH,
        host: "api.twilio.com",
        body_hash: hasher.finish(),
    }
    .hash()
}

fn request_hash() -> HexDigest {
    CanonicalRequest {
        method: "GET",
        path: PATH,
        query: "",
        authorization: AUTH,
        host: "api.twilio.com",
        body_hash: None,
    }
    .hash()
}

/// A token as the request path mints it with a key in memory: the signing input, one
/// signature, the token.
fn mint_token(minter: &TokenMinter, claims: &Claims<'_>) -> String {
    let Key::Inline(key) = minter.key() else {
        unreachable!("the bench signs with PEM keys")
    };
    let unsigned = minter.unsigned(claims);
    let signature = key.sign(minter.algorithm(), unsigned.input()).unwrap();
    unsigned.finish(&signature)
}

fn claims(hash: &HexDigest) -> Claims<'_> {
    Claims {
        api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c",
        account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
        request_hash: hash,
        issued_at: 1_795_708_550,
        ttl_secs: 300,
    }
}

/// The key of that size as PKCS#8 DER, parsed afresh for each use (a key pair is not
/// `Clone`). 2048 bits is the repository's test key; 3072 and 4096 are generated.
fn key_pkcs8(bits: usize) -> Vec<u8> {
    let key = match bits {
        2048 => RsaKeyPair::from_der(pem::parse(KEY_2048).unwrap().contents()).unwrap(),
        3072 => RsaKeyPair::generate(KeySize::Rsa3072).unwrap(),
        4096 => RsaKeyPair::generate(KeySize::Rsa4096).unwrap(),
        _ => unreachable!("only 2048, 3072 and 4096 are benchmarked"),
    };
    let der: Pkcs8V1Der<'static> = key.as_der().unwrap();
    der.as_ref().to_vec()
}

/// Per key size and algorithm: `mint` (format the claims, base64url, sign, base64url the
/// signature) beside `raw sign` (the RSA signature of the same signing input, nothing else).
fn mint(c: &mut Criterion) {
    let hash = request_hash();
    let claims = claims(&hash);
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("mint");
    for bits in [2048usize, 3072, 4096] {
        let pkcs8 = key_pkcs8(bits);
        let parse = || RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
        for (algorithm, encoding) in [
            (Algorithm::Rs256, &RSA_PKCS1_SHA256),
            (Algorithm::Ps256, &RSA_PSS_SHA256),
        ] {
            let (signer, raw) = (
                TokenMinter::new(
                    Key::Inline(Arc::new(PemKey::new(parse()).unwrap())),
                    CREDENTIAL,
                    algorithm,
                ),
                parse(),
            );
            let token = mint_token(&signer, &claims);
            let input = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
            let mut signature = vec![0u8; raw.public_modulus_len()];
            let name = algorithm.as_str();
            group.bench_function(
                BenchmarkId::new(format!("{name} pkcv-proxy mint"), bits),
                |b| b.iter(|| black_box(mint_token(&signer, black_box(&claims)))),
            );
            group.bench_function(
                BenchmarkId::new(format!("{name} aws-lc-rs raw sign"), bits),
                |b| {
                    b.iter(|| {
                        raw.sign(encoding, &rng, black_box(&input), &mut signature)
                            .unwrap();
                        black_box(&signature);
                    })
                },
            );
        }
    }
    group.finish();
}

/// Minting against `jsonwebtoken::encode`, which re-parses the DER key on every call.
fn jsonwebtoken(c: &mut Criterion) {
    let hash = request_hash();
    let claims = claims(&hash);
    let signer = TokenMinter::from_pem(KEY_2048.as_bytes(), CREDENTIAL, Algorithm::Rs256).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(KEY_2048.as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(CREDENTIAL.into());
    header.cty = Some("twilio-pkrv;v=1".into());
    let payload = serde_json::json!({"hrh": "authorization;host", "rqh": hash.as_str(), "iss": claims.api_key_sid, "exp": 1_795_708_850u64, "nbf": 1_795_708_550u64, "sub": claims.account_sid});
    let mut group = c.benchmark_group("mint vs jsonwebtoken");
    group.bench_function("pkcv-proxy RS256 2048 (key parsed once)", |b| {
        b.iter(|| black_box(mint_token(&signer, black_box(&claims))))
    });
    group.bench_function("jsonwebtoken RS256 2048 (aws_lc_rs backend)", |b| {
        b.iter(|| black_box(jsonwebtoken::encode(&header, &payload, &key).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, canonicalize, mint, jsonwebtoken);
criterion_main!(benches);
