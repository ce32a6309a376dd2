//! Who is asking: the client's address and whether its channel is private,
//! through trusted proxies (`--trusted-proxy`); and the limiter of failed
//! credentials per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// How a request reached the server: set per request from the connection
/// and, behind a trusted proxy, what the proxy says.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address; `None` over a Unix socket.
    pub ip: Option<IpAddr>,
    /// TLS to this server, or `X-Forwarded-Proto: https` from a trusted
    /// proxy.
    pub tls: bool,
}

impl Peer {
    /// Plaintext values are accepted over TLS, a Unix socket or loopback.
    pub fn private_channel(&self) -> bool {
        self.tls || self.ip.is_none_or(|ip| ip.is_loopback())
    }
}

/// An address block: `10.0.0.0/8`, `::1/128`, a bare address, or `unix`
/// (the Unix socket's peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Net { addr: IpAddr, bits: u8 },
    Unix,
}

impl Block {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "unix" {
            return Ok(Self::Unix);
        }
        let bad = || {
            format!(
                "--trusted-proxy {text:?}: use an address or CIDR block (10.0.0.0/8, ::1/128) or unix"
            )
        };
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self::Net { addr, bits })
    }

    fn contains(&self, ip: Option<IpAddr>) -> bool {
        let (Self::Net { addr, bits }, Some(ip)) = (self, ip) else {
            return matches!((self, ip), (Self::Unix, None));
        };
        let (a, b, width) = match (addr, ip.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(*a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(*a), u128::from(b), 128),
            _ => return false,
        };
        let shift = width - u32::from(*bits);
        shift >= width || (a >> shift) == (b >> shift)
    }
}

/// The proxies whose `Forwarded` / `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Block>);

impl TrustedProxies {
    pub fn parse(blocks: &[String]) -> Result<Self, String> {
        blocks
            .iter()
            .flat_map(|b| b.split(','))
            .map(|b| Block::parse(b.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: Option<IpAddr>) -> bool {
        self.0.iter().any(|b| b.contains(ip))
    }

    /// The request's peer: the connection's, unless the connection comes
    /// from a trusted proxy; then the rightmost address of the forwarding
    /// chain that is not itself a trusted proxy, and `https` if the proxy
    /// says so. Headers from anyone else are ignored.
    pub fn resolve(&self, conn: Peer, headers: &HeaderMap) -> Peer {
        if !self.trusts(conn.ip) {
            return conn;
        }
        let (chain, proto) = forwarded(headers);
        let mut client = conn.ip;
        for hop in chain.iter().rev() {
            client = Some(*hop);
            if !self.trusts(client) {
                break;
            }
        }
        Peer {
            ip: client,
            tls: conn.tls || proto.is_some_and(|p| p.eq_ignore_ascii_case("https")),
        }
    }
}

/// The forwarding chain (oldest first) and the protocol the last proxy
/// saw: `Forwarded` (RFC 7239) if present, else `X-Forwarded-For` and
/// `X-Forwarded-Proto`. Unparsable hops end the chain's trust there.
fn forwarded(headers: &HeaderMap) -> (Vec<IpAddr>, Option<String>) {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        let (mut chain, mut proto) = (Vec::new(), None);
        for element in &forwarded {
            for pair in element.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                let v = v.trim_matches('"');
                match k.to_ascii_lowercase().as_str() {
                    "for" => chain.push(parse_hop(v)),
                    "proto" => proto = Some(v.to_owned()),
                    _ => {}
                }
            }
        }
        return (cut_at_unparsable(chain), proto);
    }
    let chain = values("x-forwarded-for")
        .iter()
        .map(|v| parse_hop(v))
        .collect();
    let proto = values("x-forwarded-proto").pop();
    (cut_at_unparsable(chain), proto)
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_hop(v: &str) -> Option<IpAddr> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// Keeps the hops after the last unparsable one (an obfuscated or garbled
/// hop is where the chain stops being checkable).
fn cut_at_unparsable(chain: Vec<Option<IpAddr>>) -> Vec<IpAddr> {
    let from = chain.iter().rposition(Option::is_none).map_or(0, |i| i + 1);
    chain[from..].iter().flatten().copied().collect()
}

/// Failed credentials per client address: after `MAX_FAILURES` in a
/// window, that address's failures are answered 429 with Retry-After until
/// the window ends. Only failed credentials count (a request without one
/// is not a failure), and a valid credential is never refused.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

impl AuthLimiter {
    /// Records a failed credential from `peer`: the error to answer, 401,
    /// or 429 once the address is over the limit.
    pub fn fail(&self, peer: Option<IpAddr>) -> ApiError {
        let Ok(mut map) = self.failures.lock() else {
            return ApiError::unauthorized();
        };
        if map.len() > 100_000 {
            map.retain(|_, (_, start)| start.elapsed() < WINDOW);
        }
        let entry = map.entry(peer).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 <= MAX_FAILURES {
            return ApiError::unauthorized();
        }
        let wait = WINDOW.saturating_sub(entry.1.elapsed()).as_secs().max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("too many failed authentications from this address; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Peer {
        Peer {
            ip: Some(ip.parse().unwrap()),
            tls: false,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.1.2.3")]);
        let p = t.resolve(peer("10.9.9.9"), &h);
        assert_eq!(p.ip, Some("203.0.113.5".parse().unwrap()));
        // An untrusted peer's headers change nothing.
        let p = t.resolve(peer("192.0.2.1"), &h);
        assert_eq!(p.ip, Some("192.0.2.1".parse().unwrap()));
        let h = headers(&[(
            "forwarded",
            "for=198.51.100.1, for=\"[2001:db8::1]:443\";proto=https",
        )]);
        let p = t.resolve(peer("::1"), &h);
        assert_eq!(p.ip, Some("2001:db8::1".parse().unwrap()));
        assert!(p.tls);
        // A garbled hop: the chain is not believed past it.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, garbage")]);
        assert_eq!(
            t.resolve(peer("10.0.0.1"), &h).ip,
            Some("10.0.0.1".parse().unwrap())
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Block::parse("unix").unwrap().contains(None));
        assert!(
            Block::parse("0.0.0.0/0")
                .unwrap()
                .contains(Some("8.8.8.8".parse().unwrap()))
        );
    }
}
