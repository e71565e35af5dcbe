//! Upgraded connections over raw sockets: an upstream that records what reaches it through
//! each tunnel (and whether the gateway ended its side), and a client that opens a tunnel
//! with a plain upgrade request and tells when the gateway closed it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one tunnel brought to the upstream.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The upgrade request's head as the upstream got it.
    pub head: String,
    /// Every byte that came through the tunnel.
    pub received: Vec<u8>,
    /// The gateway ended the upstream's side (end of stream or an error).
    pub ended: bool,
}

/// An upstream that answers every WebSocket upgrade request with a `101`, then echoes and
/// records every byte that comes through the tunnel (other requests get an empty `200`).
pub struct Recorder {
    /// Where it listens.
    pub addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    /// Listens on a loopback port.
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let all = tunnels.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let Some((head, rest)) = read_head(&mut stream).await else {
                        return;
                    };
                    // Anything else (the test gateway's readiness probe): an empty 200.
                    if !String::from_utf8_lossy(&head)
                        .to_ascii_lowercase()
                        .contains("\r\nupgrade: websocket")
                    {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let index = {
                        let mut all = all.lock().unwrap();
                        all.push(Recorded {
                            head: String::from_utf8_lossy(&head).into_owned(),
                            ..Recorded::default()
                        });
                        all.len() - 1
                    };
                    let record =
                        |bytes: &[u8]| all.lock().unwrap()[index].received.extend_from_slice(bytes);
                    let upgraded = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                    if stream.write_all(upgraded).await.is_ok() {
                        record(&rest);
                        let _ = stream.write_all(&rest).await;
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            record(&buf[..n]);
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    all.lock().unwrap()[index].ended = true;
                });
            }
        });
        Recorder { addr, tunnels }
    }

    /// The tunnels so far, in the order they were opened.
    pub fn tunnels(&self) -> Vec<Recorded> {
        self.tunnels.lock().unwrap().clone()
    }

    /// Tunnel `index` (panics when it was never opened).
    pub fn tunnel(&self, index: usize) -> Recorded {
        self.tunnels()[index].clone()
    }
}

/// Reads an HTTP header section: it and the bytes read past it (`None` when the peer closed first).
pub async fn read_head(stream: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            return Some((head, rest));
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens a tunnel at the gateway on `port` (`host` as the `Host`, e.g. `127.0.0.1:8080`) with a
/// WebSocket upgrade request for `path` carrying `headers`; the stream after the `101`.
pub async fn open_tunnel(host: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = tokio::time::timeout(Duration::from_secs(10), read_head(&mut client))
        .await
        .expect("no answer to the upgrade")
        .expect("closed before answering the upgrade");
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "the upgrade was not accepted: {}",
        String::from_utf8_lossy(&head)
    );
    assert!(rest.is_empty(), "bytes behind the 101: {rest:?}");
    client
}

/// Sends `text` through the tunnel and reads it back from the echoing upstream.
pub async fn echo(client: &mut TcpStream, text: &str) {
    client.write_all(text.as_bytes()).await.unwrap();
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
        .await
        .expect("no echo through the tunnel")
        .expect("the tunnel closed");
    assert_eq!(back, text.as_bytes());
}

/// Whether the gateway closes the tunnel (end of stream or a reset) within `within`; bytes
/// that still arrive meanwhile are returned with the answer.
pub async fn closed_within(client: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Err(_) => return (false, got),
            Ok(Ok(0) | Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}
