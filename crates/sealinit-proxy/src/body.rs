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

pub(crate) struct Checked<B = Incoming> {
    inner: B,
    proxy: Arc<Proxy>,
    target: Target,
    seam: usize,
    /// The last `seam` bytes seen, not yet sent.
    held: VecDeque<Bytes>,
    held_len: usize,
    ready: VecDeque<Frame<Bytes>>,
    found: Found,
    ended: bool,
}

impl<B> Checked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(inner: B, proxy: Arc<Proxy>, target: Target, found: Found) -> Self {
        Self {
            seam: proxy.rules.body_seam(),
            inner,
            proxy,
            target,
            held: VecDeque::new(),
            held_len: 0,
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
        while !self.ended && self.held_len + self.queued() < limit {
            match self.inner.frame().await {
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
        let rules = &self.proxy.rules;
        let (host, port) = (self.target.host.as_str(), self.target.port);
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
            rules.check_body(&seam, host, port)?;
        }
        rules.check_body(&part, host, port)?;
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
            self.ready.push_back(Frame::data(front));
        }
        Ok(())
    }

    fn release(&mut self) {
        self.ready.extend(self.held.drain(..).map(Frame::data));
        self.held_len = 0;
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
        self.held.clear();
        self.ready.clear();
        let _ = self.found.set(why);
        "the request body was refused".into()
    }
}

impl<B> Body for Checked<B>
where
    B: Body<Data = Bytes> + Unpin,
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
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
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
                                    .check_body(v.as_bytes(), &self.target.host, self.target.port)
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
            && (self.ended || (self.held.is_empty() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        // The body goes on unchanged: its length is the agent's.
        self.inner.size_hint()
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
