//! A request body on its way upstream, checked as it streams: each part is
//! searched for the launch's values (and their encodings) and for
//! placeholders bound elsewhere, and so is each seam between two parts.
//! The last [`Rules::seam`] bytes are held back until the next part (or the
//! end) has been checked, so that when something is found, no byte of it
//! has left: the body ends there with an error, the upstream request is
//! cut, and the refusal is recorded.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use zeroize::Zeroizing;

use crate::rules::Refusal;
use crate::{Proxy, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a checked body found, for the answer to the agent.
pub(crate) type Found = Arc<OnceLock<Refusal>>;

/// Why a body was not sent at all.
pub(crate) enum PrefetchError {
    Read(BoxError),
    Refused(Refusal),
}

/// The seams of a stream: each part is checked, and so is each seam with
/// the part before it; the last `seam` bytes are held back until the next
/// part has been checked (or the stream ends, or falls silent).
#[derive(Debug, Default)]
pub(crate) struct Window {
    seam: usize,
    /// The last `seam` bytes seen, not yet sent.
    held: VecDeque<Bytes>,
    held_len: usize,
}

impl Window {
    pub(crate) fn new(seam: usize) -> Self {
        Self {
            seam,
            ..Self::default()
        }
    }

    /// Checks `part`, and the seam before it, with `check`; appends to
    /// `out` what is now decided.
    pub(crate) fn take(
        &mut self,
        part: Bytes,
        check: impl Fn(&[u8]) -> Result<(), Refusal>,
        out: &mut impl Extend<Bytes>,
    ) -> Result<(), Refusal> {
        if self.seam > 0 && self.held_len > 0 {
            // The held tail and the start of the part: a match across the
            // seam lies within them. It may hold part of a value: wiped.
            let mut seam = Zeroizing::new(Vec::with_capacity(2 * self.seam));
            let mut skip = self.held_len.saturating_sub(self.seam);
            for h in &self.held {
                let from = skip.min(h.len());
                skip -= from;
                seam.extend_from_slice(&h[from..]);
            }
            seam.extend_from_slice(&part[..part.len().min(self.seam)]);
            check(&seam)?;
        }
        check(&part)?;
        self.held_len += part.len();
        self.held.push_back(part);
        // Send on all but the last `seam` bytes.
        while self.held_len > self.seam {
            let mut front = self.held.pop_front().expect("held_len > 0");
            let spare = self.held_len - self.seam;
            if front.len() > spare {
                let rest = front.split_off(spare);
                self.held.push_front(rest);
            }
            self.held_len -= front.len();
            out.extend([front]);
        }
        Ok(())
    }

    /// The held bytes, now to be sent (the stream ended or fell silent).
    pub(crate) fn release(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.held_len = 0;
        self.held.drain(..)
    }

    pub(crate) fn held(&self) -> usize {
        self.held_len
    }

    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.held_len = 0;
    }
}

pub(crate) struct Checked<B = Incoming> {
    /// The agent's body; taken (and drained) when it is refused.
    inner: Option<B>,
    proxy: Arc<Proxy>,
    target: Target,
    window: Window,
    ready: VecDeque<Frame<Bytes>>,
    found: Found,
    ended: bool,
}

impl<B> Checked<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(inner: B, proxy: Arc<Proxy>, target: Target, found: Found) -> Self {
        Self {
            window: Window::new(proxy.rules.body_seam()),
            inner: Some(inner),
            proxy,
            target,
            ready: VecDeque::new(),
            found,
            ended: false,
        }
    }

    /// Reads and checks the body's first `limit` bytes (all of it when it
    /// is shorter) before anything is sent: a body that small is refused
    /// before the request leaves, as headers are.
    pub(crate) async fn prefetch(&mut self, limit: usize) -> Result<(), PrefetchError> {
        use http_body_util::BodyExt as _;
        while !self.ended && self.window.held() + self.queued() < limit {
            let Some(inner) = self.inner.as_mut() else {
                return Ok(());
            };
            match inner.frame().await {
                None => {
                    self.ended = true;
                    self.release();
                }
                Some(Err(e)) => return Err(PrefetchError::Read(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(part) => self.take(part).map_err(PrefetchError::Refused)?,
                    Err(frame) => {
                        self.release();
                        self.ready.push_back(frame);
                    }
                },
            }
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        self.ready
            .iter()
            .filter_map(|f| f.data_ref().map(Bytes::len))
            .sum()
    }

    /// Checks a new part (and the seam before it); queues what is decided.
    fn take(&mut self, part: Bytes) -> Result<(), Refusal> {
        let (rules, t) = (&self.proxy.rules, &self.target);
        let mut out = Vec::new();
        self.window.take(
            part,
            |d| rules.check_body(d, &t.host, t.port, t.tls),
            &mut out,
        )?;
        self.ready.extend(out.into_iter().map(Frame::data));
        Ok(())
    }

    fn release(&mut self) {
        let held: Vec<Bytes> = self.window.release().collect();
        self.ready.extend(held.into_iter().map(Frame::data));
    }

    fn refused(&mut self, why: Refusal) -> BoxError {
        self.proxy.record_target(
            &self.target,
            "refused",
            why.secret().into_iter().collect(),
            Some(why.to_string()),
        );
        tracing::warn!(
            launch = self.proxy.label,
            host = self.target.host,
            path = self.target.path,
            "refused (in the body): {why}"
        );
        self.window.clear();
        self.ready.clear();
        // The agent may still be sending: what is left is read and
        // dropped (bounded), so that it reads the refusal rather than a
        // reset connection.
        if let (Some(inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(drain(inner));
        }
        let _ = self.found.set(why);
        "the request body was refused".into()
    }
}

/// Reads and drops the rest of a refused body: at most 64 MiB, for at
/// most 30 s.
async fn drain<B>(mut body: B)
where
    B: Body<Data = Bytes> + Unpin + Send,
{
    use http_body_util::BodyExt as _;
    let mut left: usize = 64 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(Ok(f)) = body.frame().await {
            left = left.saturating_sub(f.data_ref().map_or(0, Bytes::len));
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

impl<B> Body for Checked<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(inner).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    self.release();
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(part) => {
                        if let Err(why) = self.take(part) {
                            return Poll::Ready(Some(Err(self.refused(why))));
                        }
                    }
                    Err(frame) => {
                        // Trailers: their values are checked like headers.
                        if let Some(t) = frame.trailers_ref() {
                            let rules = &self.proxy.rules;
                            let found = t.values().find_map(|v| {
                                rules
                                    .check_body(
                                        v.as_bytes(),
                                        &self.target.host,
                                        self.target.port,
                                        self.target.tls,
                                    )
                                    .err()
                            });
                            if let Some(why) = found {
                                return Poll::Ready(Some(Err(self.refused(why))));
                            }
                        }
                        self.release();
                        self.ready.push_back(frame);
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty()
            && (self.ended
                || (self.window.held() == 0 && self.inner.as_ref().is_none_or(B::is_end_stream)))
    }

    fn size_hint(&self) -> SizeHint {
        // The body goes on unchanged: its length is the agent's.
        self.inner.as_ref().map(B::size_hint).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealinit_core::bundle::{Binding, Entry, Header, OpenedBundle};
    use sealinit_core::secret::{SecretBuf, SecretKey};

    /// A body sent in parts of `size` bytes.
    struct Parts(VecDeque<Bytes>);

    impl Body for Parts {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    const VALUE: &[u8] = b"env-value-3f9a0c11d2";

    fn proxy() -> Arc<Proxy> {
        let key = SecretKey::from_bytes_for_tests(&[7; 32]).unwrap();
        let mut bindings = std::collections::BTreeMap::new();
        bindings.insert(
            "STRIPE".to_owned(),
            Binding {
                hosts: vec!["api.stripe.test".into()],
                placeholder: "sealinit-placeholder-STRIPE-0001".into(),
                in_body: false,
            },
        );
        let header = Header::new(1, None, Some("t".into()))
            .with_repo("r")
            .proxy_part(bindings);
        let mut stripe = Entry::env("STRIPE", b"sk_live_abcdefghijkl".to_vec().into());
        stripe.delivery = sealinit_core::bundle::Delivery::Proxy;
        let entries = [Entry::env("APP", VALUE.to_vec().into()), stripe];
        let sealed = sealinit_core::bundle::seal(&key, &header, &entries, &[1; 24]).unwrap();
        let mut buf = SecretBuf::zeroed(sealed.len()).unwrap();
        buf.expose_mut().copy_from_slice(&sealed);
        let part = OpenedBundle::open(&key, buf, None).unwrap();
        let rules = crate::Rules::new(part).unwrap();
        let ca = Arc::new(crate::tls::Authority::new("t").unwrap());
        let outbound = crate::Outbound::new(crate::Upstreams::default());
        Arc::new(Proxy::new(rules, ca, outbound, "t".into()))
    }

    /// What a checked body sends on before it ends or is cut, and whether
    /// it was cut.
    fn send(proxy: &Arc<Proxy>, body: &[u8], size: usize, host: &str) -> (Vec<u8>, bool) {
        let parts = body.chunks(size).map(Bytes::copy_from_slice).collect();
        let target = Target {
            host: host.into(),
            port: 443,
            tls: true,
            method: "POST".into(),
            path: "/".into(),
        };
        let mut c = Checked::new(Parts(parts), proxy.clone(), target, Found::default());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sent = Vec::new();
        loop {
            match Pin::new(&mut c).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => sent.extend_from_slice(f.data_ref().unwrap()),
                Poll::Ready(Some(Err(_))) => return (sent, true),
                Poll::Ready(None) => return (sent, false),
                Poll::Pending => unreachable!("the parts are all there"),
            }
        }
    }

    #[test]
    fn no_byte_of_a_value_leaves_whatever_the_parts() {
        use base64::Engine as _;
        let proxy = proxy();
        let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
        let placeholder = b"sealinit-placeholder-STRIPE-0001";
        for (what, host) in [
            (VALUE, "other.test"),
            (b64.as_bytes(), "other.test"),
            (&placeholder[..], "other.test"),
        ] {
            for at in [0, 1, 5000, 70_001] {
                let mut body = vec![b'a'; at];
                body.extend_from_slice(what);
                body.extend_from_slice(&[b'z'; 3000]);
                for size in [1, 3, 7, 64, 4096, 1 << 20] {
                    let (sent, cut) = send(&proxy, &body, size, host);
                    assert!(cut, "{at} {size}");
                    assert!(sent.len() <= at, "{at} {size}: {} bytes sent", sent.len());
                    assert_eq!(sent, body[..sent.len()]);
                }
            }
        }
        // Without a value, or with a placeholder toward its host, the body
        // goes on whole and unchanged.
        let mut body = vec![b'q'; 100_000];
        body.extend_from_slice(placeholder);
        for size in [1, 7, 65536] {
            assert_eq!(
                send(&proxy, &body, size, "api.stripe.test"),
                (body.clone(), false)
            );
        }
    }
}
