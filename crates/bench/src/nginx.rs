//! The nginx floor: nginx as a plain forward proxy to the same loopback TLS upstream, driven
//! with the same load in the same run, so the proxy's cost beyond its RSA signature can be set
//! beside what a mature forwarder spends on the same request (issue #23).
//!
//! One worker process, `proxy_pass https://` to an `upstream` block with `keepalive`, HTTP/1.1
//! upstream with `Connection ""`, the upstream's certificate verified against its CA with
//! `proxy_ssl_name`, TLS sessions reused; no access log (the proxy logs at `warn` in the
//! benchmark, so neither writes a line per request). Everything lives in a temporary prefix
//! and listens on 127.0.0.1 only.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::procfs::{self, Usage};
use crate::upstream::{Upstream, HOST};

/// Debian's nginx-light puts it here.
pub(crate) const DEFAULT_BINARY: &str = "/usr/sbin/nginx";

/// A running nginx (master and one worker).
pub(crate) struct Nginx {
    child: Child,
    master: u32,
    pub(crate) listen: SocketAddr,
    /// The prefix: config, CA file, temp directories, pid and error log.
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Writes a config in a fresh prefix, starts `binary` in the foreground and waits until it
    /// accepts connections.
    pub(crate) async fn start(
        binary: &Path,
        upstream: &Upstream,
        max_clients: usize,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("pkcv-bench-nginx-")
            .tempdir()?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let status = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir(dir.path().join(temp))?;
        }
        let ca = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca, &upstream.ca_pem)?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            config_text(
                dir.path(),
                &ca,
                [listen, status],
                upstream.addr,
                max_clients,
            ),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| anyhow::anyhow!("starting {}: {err}", binary.display()))?;
        let master = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("nginx exited at once"))?;
        let mut nginx = Nginx {
            child,
            master,
            listen,
            _dir: dir,
        };
        nginx.wait_ready().await?;
        Ok(nginx)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("nginx exited during start-up ({status})");
            }
            if TcpStream::connect(self.listen).await.is_ok() && !self.workers().is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("nginx did not listen on {} within 30 s", self.listen)
    }

    /// The worker processes: the master's children.
    fn workers(&self) -> Vec<u32> {
        children(self.master)
    }

    /// CPU time and memory of the worker(s), summed (the master only waits on signals).
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        let mut total = Usage::default();
        for pid in self.workers() {
            let usage = procfs::usage(Some(pid))?;
            total.cpu += usage.cpu;
            total.rss += usage.rss;
            total.hwm += usage.hwm;
            total.threads += usage.threads;
        }
        Ok(total)
    }

    /// SIGQUIT-free stop: kill the master; the worker exits when its parent goes.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let workers = self.workers();
        self.child.kill().await?;
        for pid in workers {
            if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid)?) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        Ok(())
    }
}

/// Processes whose parent is `parent`, from `/proc/*/stat`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| procfs::parent_pid(&stat))
                == Some(parent)
        })
        .collect()
}

fn config_text(
    prefix: &Path,
    ca: &Path,
    [listen, status]: [SocketAddr; 2],
    upstream: SocketAddr,
    max_clients: usize,
) -> String {
    let path = |name: &str| -> PathBuf { prefix.join(name) };
    // Every client may hold an upstream connection: keep them all, and never retire one for
    // its age or request count inside a run (a retired one is a new TLS handshake).
    let keepalive = max_clients.max(16);
    let connections = (4 * max_clients).max(4096);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile {};\n\
         pid {};\nerror_log {} warn;\nevents {{ worker_connections {connections}; }}\n",
        2 * connections + 64,
        path("nginx.pid").display(),
        path("error.log").display(),
    );
    let _ = writeln!(text, "http {{\n    access_log off;");
    for (directive, dir) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(text, "    {directive} {};", path(dir).display());
    }
    let _ = writeln!(
        text,
        "    keepalive_requests 100000000;\n    keepalive_timeout 300s;\n\
         upstream twilio {{\n        server {upstream};\n        keepalive {keepalive};\n\
         keepalive_requests 100000000;\n        keepalive_time 24h;\n        keepalive_timeout 300s;\n    }}"
    );
    let _ = writeln!(
        text,
        "    server {{\n        listen {listen} backlog=4096;\n        location / {{\n\
         proxy_pass https://twilio;\n            proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n            proxy_set_header Host {HOST};\n\
         proxy_ssl_name {HOST};\n            proxy_ssl_server_name on;\n\
         proxy_ssl_verify on;\n            proxy_ssl_trusted_certificate {};\n\
         proxy_ssl_session_reuse on;\n        }}\n    }}",
        ca.display()
    );
    // Request counts for whoever looks (strace runs divide by them), off the measured server.
    let _ = writeln!(
        text,
        "    server {{\n        listen {status};\n        location / {{ stub_status; }}\n    }}\n}}"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_forwarding_essentials() {
        let text = config_text(
            Path::new("/tmp/p"),
            Path::new("/tmp/p/ca.pem"),
            [
                "127.0.0.1:8080".parse().unwrap(),
                "127.0.0.1:8081".parse().unwrap(),
            ],
            "127.0.0.1:8443".parse().unwrap(),
            1024,
        );
        for needle in [
            "worker_processes 1;",
            "listen 127.0.0.1:8080",
            "server 127.0.0.1:8443;",
            "keepalive 1024;",
            "proxy_pass https://twilio;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_ssl_name api.twilio.com;",
            "proxy_ssl_verify on;",
            "proxy_ssl_trusted_certificate /tmp/p/ca.pem;",
            "proxy_ssl_session_reuse on;",
            "proxy_temp_path /tmp/p/proxy;",
            "listen 127.0.0.1:8081;",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
