//! The per-request hot path: normalize + canonicalize + hash, and minting the token.
//!
//! `mint/pkcv-proxy` (key parsed once) against `mint/jsonwebtoken` (parses the key on every
//! encode) is the measurement behind minting tokens in `token.rs`. Results: BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pkcv_proxy::canonical::{BodyHasher, CanonicalRequest};
use pkcv_proxy::normalize::{normalize_path, normalize_query};
use pkcv_proxy::token::{Algorithm, Claims, Signer};
use std::hint::black_box;

const AUTH: &str = "Basic U0swZjFlMmQzYzBmMWUyZDNjMGYxZTJkM2MwZjFlMmQzYzpub3QtYS1yZWFsLXNlY3JldA==";
const KEY: &str = include_str!("../../shared/vectors/test-keys/pkcv-test-private.pem");

fn canonicalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalize+hash");
    let path = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4/Messages.json";
    let query = "PageSize=50&DateSent%3E=2026-01-01&To=%2B14155550100";
    group.bench_function("GET with query", |b| {
        b.iter(|| {
            let path = normalize_path(black_box(path)).unwrap();
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
    for size in [84usize, 64 * 1024, 1024 * 1024] {
        let body = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("POST body bytes", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let path = normalize_path(black_box(path)).unwrap();
                    let mut hasher = BodyHasher::default();
                    // Hashed in 16 KiB chunks, as hyper delivers them.
                    for chunk in body.chunks(16 * 1024) {
                        hasher.update(chunk);
                    }
                    let request = CanonicalRequest {
                        method: "POST",
                        path: &path,
                        query: "",
                        authorization: AUTH,
                        host: "api.twilio.com",
                        body_hash: hasher.finish(),
                    };
                    black_box(request.hash())
                })
            },
        );
    }
    group.finish();
}

fn mint(c: &mut Criterion) {
    let mut group = c.benchmark_group("mint");
    let credential = "CR9a8b7c6d9a8b7c6d9a8b7c6d9a8b7c6d";
    let signer = Signer::from_pem(KEY.as_bytes(), credential, Algorithm::Rs256).unwrap();
    let hash = CanonicalRequest {
        method: "GET",
        path: "/",
        query: "",
        authorization: AUTH,
        host: "api.twilio.com",
        body_hash: None,
    }
    .hash();
    let claims = Claims {
        api_key_sid: "SK0f1e2d3c0f1e2d3c0f1e2d3c0f1e2d3c",
        account_sid: "ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4",
        request_hash: &hash,
        issued_at: 1_795_708_550,
        ttl_secs: 300,
    };
    group.bench_function("pkcv-proxy RS256 (key parsed once)", |b| {
        b.iter(|| black_box(signer.mint(black_box(&claims)).unwrap()))
    });
    let ps256 = Signer::from_pem(KEY.as_bytes(), credential, Algorithm::Ps256).unwrap();
    group.bench_function("pkcv-proxy PS256 (key parsed once)", |b| {
        b.iter(|| black_box(ps256.mint(black_box(&claims)).unwrap()))
    });

    let key = jsonwebtoken::EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(credential.into());
    header.cty = Some("twilio-pkrv;v=1".into());
    let payload = serde_json::json!({"hrh": "authorization;host", "rqh": hash.as_str(), "iss": claims.api_key_sid, "exp": 1_795_708_850u64, "nbf": 1_795_708_550u64, "sub": claims.account_sid});
    group.bench_function("jsonwebtoken RS256 (aws_lc_rs backend)", |b| {
        b.iter(|| black_box(jsonwebtoken::encode(&header, &payload, &key).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, canonicalize, mint);
criterion_main!(benches);
