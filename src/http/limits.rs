//! Connection limits of the HTTP server: a cap on open connections and timeouts, so idle or
//! slow clients can never take the descriptors the engine and Redis connections need.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Default cap on open HTTP connections.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// A connection must have sent a request and been answered within this long after it opened.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing read or written for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections refused because the cap was reached (for metrics and tests).
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// A TCP listener that holds at most `max` connections: beyond it a new connection is closed
/// at once (the descriptors stay free), and every connection carries the timeouts above.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl LimitedListener {
    /// Wraps `inner` with a cap of `max` open connections (at least 1).
    pub(crate) fn new(inner: TcpListener, max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            header_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: wait a little rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    return (
                        Limited::new(stream, permit, self.header_timeout, self.idle_timeout),
                        addr,
                    );
                }
                Err(_) => {
                    let n = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            refused = n,
                            "HTTP connection cap reached: new connections are closed until idle ones time out"
                        );
                    }
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that times out when idle or when no request was answered in time; its slot
/// under the cap is freed when it is dropped.
pub(crate) struct Limited<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    first_answer_by: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<S> Limited<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, header: Duration, idle: Duration) -> Self {
        let by = Instant::now() + header;
        Self {
            inner,
            _permit: permit,
            idle,
            first_answer_by: Some(by),
            timer: Box::pin(tokio::time::sleep_until(by.min(Instant::now() + idle))),
        }
    }

    fn activity(&mut self) {
        let idle_end = Instant::now() + self.idle;
        let end = self.first_answer_by.map_or(idle_end, |by| by.min(idle_end));
        self.timer.as_mut().reset(end);
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timeout_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP connection idle or too slow")
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.activity();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.timed_out(cx) => Poll::Ready(Err(timeout_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.first_answer_by = None;
                    self.activity();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.timed_out(cx) => Poll::Ready(Err(timeout_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn limited(
        max: usize,
        header: Duration,
        idle: Duration,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = LimitedListener::new(inner, max);
        listener.header_timeout = header;
        listener.idle_timeout = idle;
        let task = tokio::spawn(async move {
            loop {
                let (mut io, _) = axum::serve::Listener::accept(&mut listener).await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn beyond_the_cap_connections_are_closed_and_idle_ones_time_out() {
        let (addr, task) = limited(2, Duration::from_millis(300), Duration::from_secs(5)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "beyond the cap: closed at once"
        );
        // The two silent ones are closed after the header timeout, freeing their slots.
        for mut s in held {
            let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "a silent connection times out"
            );
        }
        let mut fresh = tokio::net::TcpStream::connect(addr).await.unwrap();
        fresh.write_all(b"x").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(1))), "a slot is free again: {n:?}");
        task.abort();
    }
}
