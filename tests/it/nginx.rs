//! What goes upstream, against a strict HTTP/2 server: nginx (from Debian; `.ci/run`
//! installs `nginx-light`) refuses a request that carries both `:authority` and a `host`
//! header (`400`, "client sent duplicate host header"), as a strict Twilio edge may. The
//! proxy speaks HTTP/1.1 upstream by default, as the official SDKs do, and with
//! `upstream.http2` sends `:authority` alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{Harness, TestAccount};

const A_ACCOUNTS: &str = "/2010-04-01/Accounts/ACa1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4.json";

/// nginx on loopback with TLS for api.twilio.com, answering with the protocol and host it
/// saw; one process (no master and workers, so nothing outlives the test), killed on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let binary = PathBuf::from("/usr/sbin/nginx");
    assert!(
        binary.exists(),
        "needs nginx: apt-get install nginx-light (.ci/run installs it)"
    );
    binary
}

/// A CA and a certificate for api.twilio.com it signed, as PEM files in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["api.twilio.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", &ca_cert.pem()),
        write("leaf.pem", &leaf.pem()),
        write("leaf-key.pem", &leaf_key.serialize_pem()),
    )
}

fn start_nginx() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert, key) = certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    let config = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         server {{\n  listen 127.0.0.1:{port} ssl http2;\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
         location / {{ default_type text/plain; return 200 \"$server_protocol $host\"; }}\n }}\n}}\n",
        cert.display(),
        key.display()
    );
    let config_file = dir.path().join("nginx.conf");
    std::fs::write(&config_file, config).unwrap();
    let child = std::process::Command::new(nginx_binary())
        .arg("-c")
        .arg(&config_file)
        .arg("-p")
        .arg(dir.path())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        port,
        ca_file,
        _dir: dir,
    }
}

async fn through_proxy_to_nginx(http2: bool) -> (u16, String) {
    let nginx = start_nginx();
    let h = Harness::start_with(&[TestAccount::a()], |raw| {
        raw.upstream.http2 = http2;
        raw.upstream.extra_ca_file = Some(nginx.ca_file.clone());
        raw.upstream
            .connect_to
            .insert("api.twilio.com".into(), format!("127.0.0.1:{}", nginx.port));
    })
    .await;
    let response = h
        .get(h.url(A_ACCOUNTS), &TestAccount::a().basic_auth())
        .await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    h.stop().await;
    (status, body)
}

#[tokio::test]
#[ignore = "needs nginx-light (apt-get install nginx-light)"]
async fn http1_upstream_by_default_as_the_sdks_speak() {
    let (status, body) = through_proxy_to_nginx(false).await;
    assert_eq!((status, body.as_str()), (200, "HTTP/1.1 api.twilio.com"));
}

#[tokio::test]
#[ignore = "needs nginx-light (apt-get install nginx-light)"]
async fn http2_upstream_sends_authority_alone_which_a_strict_server_accepts() {
    let (status, body) = through_proxy_to_nginx(true).await;
    assert_eq!((status, body.as_str()), (200, "HTTP/2.0 api.twilio.com"));
}
