//! `Server::new` reads the `LIVEROOM_*` environment variables the docs list. One test in its own
//! binary: the environment is the process's.

mod common;

use common::*;
use liveroom::Server;

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn server_new_reads_the_environment() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    // The only test of this binary: no other test reads the environment meanwhile.
    std::env::set_var("LIVEROOM_BIND", "127.0.0.1:0");
    std::env::set_var("LIVEROOM_ALLOWED_ORIGINS", "http://localhost:5173");
    let server = Server::new(test_app().0).start().await.expect("starts");
    // Listening on a free port (not the default 3000), in memory.
    assert_ne!(server.addr().port(), 3000);
    let line = server.startup_line();
    assert_eq!(
        line,
        format!(
            "listening on http://{} (single process, presence in memory)",
            server.addr()
        )
    );
    // The extra origin is allowed, on top of the page's own.
    let dev = Peer::connect_with(&server, "", &[("Origin", "http://localhost:5173")], true).await;
    dev.assert_alive().await;
    let same = format!("http://{}", server.addr());
    Peer::connect_with(&server, "", &[("Origin", &same)], true)
        .await
        .assert_alive()
        .await;
    let mut other =
        Peer::connect_with(&server, "", &[("Origin", "http://elsewhere.example")], true).await;
    assert_eq!(other.close_code().await, Some(1008));
    // The refusal is logged at warn, with the origin and how to allow it.
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("refused a WebSocket"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    let how = "origin http://elsewhere.example: allow it with --allowed-origins \
               http://elsewhere.example (LIVEROOM_ALLOWED_ORIGINS)";
    assert!(line.contains(how), "{line}");
    server.shutdown().await.unwrap();

    // An invalid value fails the start, naming the variable.
    std::env::set_var("LIVEROOM_MAX_CONNECTIONS", "lots");
    let err = Server::new(test_app().0)
        .start()
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("LIVEROOM_") && text.contains("lots"),
        "{text}"
    );
}
