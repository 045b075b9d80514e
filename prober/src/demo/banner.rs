//! The TCP banner (9683): greets like a mail relay, `220 prober demo ready`,
//! then answers each line with `250 ok` (`QUIT`: `221 bye` and close). Lines
//! are capped at [`MAX_LINE`] bytes, a connection at [`MAX_LINES`] lines and
//! [`super::IDLE_TIMEOUT`] of silence.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::IDLE_TIMEOUT;

/// The greeting, sent as soon as a client connects.
pub const BANNER: &str = "220 prober demo ready\r\n";
const MAX_LINE: u64 = 1024;
const MAX_LINES: usize = 32;

pub(crate) async fn serve(listener: TcpListener, stop: CancellationToken, tasks: TaskTracker) {
    super::accept_each(listener, stop, tasks, |sock| async move {
        let _ = converse(sock).await;
    })
    .await;
}

async fn converse(mut sock: TcpStream) -> std::io::Result<()> {
    sock.write_all(BANNER.as_bytes()).await?;
    let (read, mut write) = sock.split();
    let mut read = BufReader::new(read);
    for _ in 0..MAX_LINES {
        let mut line = Vec::new();
        let n = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut read).take(MAX_LINE).read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().eq_ignore_ascii_case("quit") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        }
        write.write_all(b"250 ok\r\n").await?;
    }
    write.write_all(b"421 too many commands\r\n").await
}
