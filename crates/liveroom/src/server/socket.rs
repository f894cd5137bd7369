//! One WebSocket connection after the upgrade: the reader (this task) decodes frames and feeds
//! the session, the writer task drains the outbox. An idle connection holds no read buffer.

use super::shared::{Shared, Slot};
use super::writer::{write_loop, Liveness};
use crate::close;
use crate::protocol;
use crate::ws::{self, Decoder, Message};
use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One open WebSocket connection in [`Shared::open`], from the moment its upgrade is accepted
/// (before the 101, so a shutdown that starts meanwhile waits for it) until it is dropped. It
/// keeps its TCP connection's [`Slot`] taken.
pub(super) struct Open(Arc<Slot>);

impl Open {
    pub fn new(slot: Arc<Slot>) -> Self {
        slot.shared.open.fetch_add(1, Ordering::SeqCst);
        Open(slot)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let shared = &self.0.shared;
        shared.open.fetch_sub(1, Ordering::SeqCst);
        shared.closed.notify_waiters();
    }
}

/// Serves one upgraded connection until it closes.
pub(super) async fn serve_socket(
    open: Open,
    upgraded: hyper::upgrade::Upgraded,
    verdict: Result<Option<serde_json::Value>, Refusal>,
) {
    let shared = &open.0.shared;
    // The plain TCP stream lets an idle connection wait for readability holding no buffer.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => {
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            drop(read_buf); // may share hyper's whole read buffer
            let tcp = io.into_inner();
            // The writer already coalesces frames into one write; Nagle's algorithm would only
            // hold the next small write back until the peer's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let (rd, wr) = tcp.into_split();
            run_socket(shared, Reader::Tcp(rd), wr, verdict).await;
        }
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            let _ = tcp.set_nodelay(true);
            let io = TokioIo::new(Prefixed::new(parts.read_buf, tcp));
            let (rd, wr) = tokio::io::split(io);
            run_socket(shared, Reader::Any(Box::new(rd)), wr, verdict).await;
        }
        Err(upgraded) => {
            let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
            run_socket(shared, Reader::Any(Box::new(rd)), wr, verdict).await;
        }
    }
    drop(open);
}

/// Bytes hyper read past the upgrade request, then the stream.
struct Prefixed {
    prefix: bytes::Bytes,
    inner: TcpStream,
}

impl Prefixed {
    fn new(prefix: bytes::Bytes, inner: TcpStream) -> Self {
        Prefixed { prefix, inner }
    }
}

impl hyper::rt::Read for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            bytes::Buf::advance(&mut self.prefix, n);
            return std::task::Poll::Ready(Ok(()));
        }
        let mut io = TokioIo::new(&mut self.inner);
        hyper::rt::Read::poll_read(std::pin::Pin::new(&mut io), cx, buf)
    }
}

impl hyper::rt::Write for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.inner), cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.inner), cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.inner), cx)
    }
}

enum Reader {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Any(Box<dyn AsyncRead + Send + Unpin>),
}

impl Reader {
    /// Reads more bytes into `buf`, allocating only once data is there. `Ok(0)` is EOF.
    async fn fill(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(rd) => loop {
                rd.readable().await?;
                buf.reserve(4096);
                match rd.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Readiness is only cleared by a read that would block, so after every
                        // message the next read lands here: wait without the buffer (measured:
                        // 4 KiB of every idle connection's 8 KiB).
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                    }
                    other => return other,
                }
            },
            Reader::Any(rd) => {
                buf.reserve(4096);
                rd.read_buf(buf).await
            }
        }
    }
}

/// Why an upgraded socket is closed at once: the close code and a reason for the developer
/// reading the browser console (the JS client shows it).
pub(super) struct Refusal {
    pub code: u16,
    pub reason: String,
}

async fn run_socket<W>(
    shared: &Shared,
    mut reader: Reader,
    mut writer: W,
    verdict: Result<Option<serde_json::Value>, Refusal>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let user = match verdict {
        Ok(user) => user,
        Err(Refusal { code, reason }) => {
            let mut buf = BytesMut::new();
            ws::encode_close_with_reason(&mut buf, code, &reason);
            let _ = writer.write_all(&buf).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let mut session = shared.live.open(user);
    let conn = session.conn().clone();
    let liveness = Liveness::of(&shared.config.limits);
    let mut signal = shared.signal.clone();
    let mut degraded = signal.borrow_and_update().degraded;
    let welcome = session.welcome();
    if welcome.is_some() || degraded {
        // Written here from a buffer dropped at once, before the writer starts: an idle
        // connection keeps no write buffer or queue capacity for it.
        let mut once = BytesMut::new();
        if let Some(welcome) = welcome {
            ws::encode(&mut once, ws::Opcode::Text, &welcome);
        }
        if degraded {
            ws::encode(&mut once, ws::Opcode::Text, &protocol::health(true));
        }
        if writer.write_all(&once).await.is_err() {
            session.close();
            return;
        }
        conn.wrote();
    }
    let mut write_task = tokio::spawn(write_loop(conn.clone(), writer, liveness));
    let mut decoder = Decoder::new(shared.config.limits.max_message);
    let mut buf = BytesMut::new();
    'read: loop {
        tokio::select! {
            read = reader.fill(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break 'read,
                    Ok(_) => conn.heard(),
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(None) => break,
                        // Boxed: the call machinery is only allocated while a frame is handled, so an
                        // idle connection's task stays small.
                        Ok(Some(Message::Text(text))) => Box::pin(session.message(&text)).await,
                        Ok(Some(Message::Binary(_))) => session.binary(),
                        Ok(Some(Message::Ping(p))) => conn.outbox.pong(p),
                        Ok(Some(Message::Pong)) => {}
                        Ok(Some(Message::Close(code))) => {
                            // Echo the peer's code (RFC 6455 section 5.5.1).
                            conn.outbox.close(code.unwrap_or(close::NORMAL));
                            break 'read;
                        }
                        Err(ws::DecodeError(code)) => {
                            metrics::counter!("liveroom_bad_frames_total").increment(1);
                            conn.outbox.close(code);
                            break 'read;
                        }
                    }
                }
                if buf.is_empty() && buf.capacity() > 0 {
                    buf = BytesMut::new(); // idle connections hold no read buffer
                }
            }
            _ = conn.stream_failure() => session.settle(),
            changed = signal.changed() => {
                let now = *signal.borrow_and_update();
                if changed.is_err() || now.stop {
                    conn.outbox.close(close::GOING_AWAY);
                    break 'read;
                }
                if now.degraded != degraded {
                    degraded = now.degraded;
                    conn.outbox.reply(protocol::health(degraded));
                }
            }
            _ = &mut write_task => {
                // The writer stopped (peer gone, or a close such as 1013 was sent).
                session.close();
                return;
            }
        }
    }
    session.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), write_task).await;
}
