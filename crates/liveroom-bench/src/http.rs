//! A minimal HTTP/1.1 client (keep-alive, content-length or chunked bodies), enough for health
//! checks and Sockudo's REST API without pulling in a full HTTP stack.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct HttpConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `connection: close`: reconnect before the next request.
    reconnect: bool,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        crate::ws::ensure_loopback(addr)?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            addr,
            stream,
            buf: Vec::with_capacity(4096),
            reconnect: false,
        })
    }

    /// Sends one request and reads the whole response: (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>)> {
        if self.reconnect {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = stream;
            self.buf.clear();
            self.reconnect = false;
        }
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
            self.addr
        );
        if let Some((ct, b)) = body {
            req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        if let Some((_, b)) = body {
            out.extend_from_slice(b);
        }
        self.stream.write_all(&out).await?;
        tokio::time::timeout(Duration::from_secs(30), self.read_response())
            .await
            .context("HTTP response timeout")?
    }

    async fn fill(&mut self) -> Result<()> {
        let mut tmp = [0u8; 8192];
        let n = self.stream.read(&mut tmp).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end + 4);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.reconnect = true;
        }
        let body = if let Some(len) = header("content-length") {
            let len: usize = len.parse()?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    self.fill().await?;
                };
                let size_str = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            Vec::new()
        };
        Ok((status, body))
    }
}

/// One-shot GET; `Ok((status, body))`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut c = HttpConn::connect(addr).await?;
    let (s, b) = c.request("GET", path, None).await?;
    Ok((s, String::from_utf8_lossy(&b).to_string()))
}
