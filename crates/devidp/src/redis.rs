//! A throwaway `redis-server` for tests (feature `testing`): on a free loopback port, without
//! persistence unless asked ([`RedisServer::save`]), in a directory of its own, stopped when
//! dropped.
//!
//! Where `redis-server` is missing, [`RedisServer::start_or_skip`] fails under CI (or
//! `AUTHGATE_REQUIRE_SERVICES=1`) and skips with a visible line elsewhere ([`crate::services`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed (and its directory removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Certificate and key files: the port speaks TLS only.
    tls: Option<(PathBuf, PathBuf)>,
}

impl RedisServer {
    /// Starts one; `None` (with a `SKIPPED` line on stderr) when `redis-server` is not installed
    /// and no service is required. Under CI a missing `redis-server` panics
    /// ([`crate::services::skip`]): the test must not pass by skipping.
    pub fn start_or_skip(what: &str) -> Option<RedisServer> {
        RedisServer::installed(what).then(|| RedisServer::start_with(None))
    }

    /// Like [`RedisServer::start_or_skip`], the port speaking TLS only with this certificate
    /// and key (PEM files); no client certificates asked for.
    pub fn start_tls_or_skip(
        what: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Option<RedisServer> {
        RedisServer::installed(what)
            .then(|| RedisServer::start_with(Some((cert.to_path_buf(), key.to_path_buf()))))
    }

    fn installed(what: &str) -> bool {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            crate::services::skip(
                what,
                "redis-server is not installed (apt-get install redis-server)",
            );
        }
        installed
    }

    /// Starts one on a free loopback port (panics when it cannot: a test fixture).
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    #[allow(
        clippy::expect_used,
        reason = "a test fixture: failing loudly is the point"
    )]
    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce);
        let dir = std::env::temp_dir().join(format!(
            "authgate-redis-{port}-{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            tls,
        };
        server.restart();
        server
    }

    /// (Re)starts the server on its port and directory (loading what [`RedisServer::save`] saved).
    #[allow(
        clippy::expect_used,
        reason = "a test fixture: failing loudly is the point"
    )]
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ready = match self.tls {
                None => self
                    .command(&["PING"])
                    .is_some_and(|r| r.starts_with("+PONG")),
                Some(_) => TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], self.port)),
                    Duration::from_millis(200),
                )
                .is_ok(),
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer on port {} within 10s",
            self.port
        );
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the data to disk, so that [`RedisServer::restart`] after [`RedisServer::stop`]
    /// finds it again.
    pub fn save(&self) -> bool {
        self.command(&["SAVE"])
            .is_some_and(|r| r.starts_with("+OK"))
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every key matching `pattern` and its serialised value (`DUMP`), as lossy text: what an
    /// attacker with a copy of the database would read.
    pub fn dump(&self, pattern: &str) -> String {
        let Some(listing) = self.command(&["KEYS", pattern]) else {
            return String::new();
        };
        let keys: Vec<String> = listing
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_owned)
            .collect();
        let mut out = String::new();
        for key in keys {
            out.push_str(&key);
            out.push('\n');
            out.push_str(&self.command(&["DUMP", &key]).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// One command's raw answer, lossily as text; `None` when the server does not answer (or
    /// speaks TLS only).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        stream.write_all(&request).ok()?;
        let mut reader = BufReader::new(stream);
        let mut out = Vec::new();
        read_reply(&mut reader, &mut out)?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Reads one RESP reply (arrays in full) into `out`.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<u8>) -> Option<()> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    out.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line);
    let n: i64 = text.get(1..)?.trim().parse().unwrap_or(-1);
    match line.first()? {
        b'$' if n >= 0 => {
            let mut body = vec![0u8; usize::try_from(n).ok()? + 2];
            reader.read_exact(&mut body).ok()?;
            out.extend_from_slice(&body);
        }
        b'*' if n > 0 => {
            for _ in 0..n {
                read_reply(reader, out)?;
            }
        }
        _ => {}
    }
    Some(())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
