//! `/ws` with whatever a client sends after the upgrade, through the real router, hyper's
//! HTTP/1 connection with upgrades and the real session, over an in-memory stream.
//!
//! The session reads client frames only to notice a close (the feed is read-only), so what
//! this covers is the WebSocket layer's frame parsing (tungstenite: opcodes, fragments,
//! masks, lengths, the 64 KiB message limit, close codes, invalid UTF-8) and the session's
//! handling of each outcome: it must never panic, and must end once the client has closed
//! or sent garbage. It does not cover the handshake's own variants (the API target sends
//! `/ws` requests without an upgrade).

use std::time::Duration;

use axum::http::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

use super::{ADDR, Input};

/// The session must have ended by then once the client is done.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Frames per input.
const MAX_FRAMES: usize = 32;

/// The client's frames, encoded from the input: mostly well-formed (so the fuzzer explores
/// what follows a frame), with the first byte and the length chosen freely. Inputs whose
/// first byte is odd are sent raw instead.
pub fn frames(data: &[u8]) -> Vec<u8> {
    let mut input = Input::new(data);
    if input.byte() & 1 == 1 {
        return input.rest().to_vec();
    }
    let mut out = Vec::new();
    for _ in 0..MAX_FRAMES {
        if input.is_empty() {
            break;
        }
        // FIN, RSV1-3 and the opcode, as they come.
        out.push(input.byte());
        let length = input.byte();
        let masked = length & 0x80 == 0;
        let payload: Vec<u8> = match length & 0x7f {
            // A message just over the session's 64 KiB limit, one byte repeated.
            126 => vec![input.byte(); 64 * 1024 + 1],
            // A length the client never sends.
            127 => {
                out.push(if masked { 0xff } else { 0x7f });
                out.extend_from_slice(input.take(8));
                continue;
            }
            n => input.take(usize::from(n)).to_vec(),
        };
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [input.byte(), input.byte(), input.byte(), input.byte()];
        if masked {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&payload);
        }
    }
    out
}

/// Opens `/ws` on a fresh server, sends the input's frames, closes, and checks the session
/// answered the upgrade, sent the state and ended, without a panic anywhere.
pub fn check(data: &[u8]) {
    let frames = frames(data);
    super::no_panic_on_this_thread(|| {
        super::runtime().block_on(async {
            let server = super::server().await;
            let (mut client, server_io) = tokio::io::duplex(1 << 16);
            let router = server.router.clone();
            let service = hyper::service::service_fn(move |request: Request<_>| {
                router.clone().oneshot(request)
            });
            let connection = tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server_io), service)
                    .with_upgrades(),
            );
            let handshake = format!(
                "GET /ws HTTP/1.1\r\nHost: {ADDR}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            client
                .write_all(handshake.as_bytes())
                .await
                .expect("the server takes the handshake");
            let mut answer = Vec::new();
            let mut chunk = [0u8; 4096];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(TIMEOUT, client.read(&mut chunk))
                    .await
                    .expect("the upgrade is answered")
                    .expect("reading the upgrade");
                assert!(n > 0, "the connection closed before answering the upgrade");
                answer.extend_from_slice(&chunk[..n]);
            }
            assert!(
                answer.starts_with(b"HTTP/1.1 101"),
                "the upgrade was refused: {}",
                String::from_utf8_lossy(&answer)
            );
            let (mut read, mut write) = tokio::io::split(client);
            let reader = tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = read.read_to_end(&mut all).await;
                all
            });
            // The server may close first (a bad frame, a close): then the rest is not read.
            let _ = write.write_all(&frames).await;
            let _ = write.shutdown().await;
            answer.extend(
                tokio::time::timeout(TIMEOUT, reader)
                    .await
                    .expect("the session ends once the client has closed")
                    .expect("the reader does not panic"),
            );
            let state = br#"{"type":"state""#;
            assert!(
                answer.windows(state.len()).any(|w| w == state),
                "the session sent no state"
            );
            tokio::time::timeout(TIMEOUT, connection)
                .await
                .expect("the connection ends")
                .expect("the connection does not panic")
                .expect("hyper serves the connection");
        });
    });
}
