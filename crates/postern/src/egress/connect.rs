//! Connecting to a destination: resolve, refuse non-public addresses unless
//! allowed (checked on the resolved address, and the socket goes to exactly that
//! address, so DNS rebinding cannot slip past), then race the candidates with
//! Happy Eyeballs (RFC 8305).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use postern_policy::host::{Host, normalize_host};
use postern_policy::{AddressClass, Cidr, classify};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use super::resolve::{ResolveError, Resolver};
use crate::error::{ErrorKind, ProxyError};

/// RFC 8305 §5: the recommended delay before trying the next address.
const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// A host as written in a request: a name or an address literal, normalised
/// (`postern_policy::host`) so that no spelling of an address passes as a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Name(String),
    Ip(IpAddr),
}

impl Destination {
    /// Parses the host part of an authority (`example.com`, `10.0.0.1`, `[::1]`,
    /// `0x7f.1`, `bücher.de`).
    pub fn parse(host: &str) -> Result<Destination, &'static str> {
        Ok(match normalize_host(host)? {
            Host::Name(n) => Destination::Name(n),
            Host::Ip(ip) => Destination::Ip(ip),
        })
    }

    /// The host as rules see it: the name, or the address without brackets.
    pub fn rule_host(&self) -> Cow<'_, str> {
        match self {
            Destination::Name(n) => Cow::Borrowed(n),
            Destination::Ip(ip) => Cow::Owned(postern_policy::addr::ip_string(*ip)),
        }
    }

    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self {
            Destination::Ip(ip) => Some(*ip),
            Destination::Name(_) => None,
        }
    }
}

/// Which non-public addresses egress may reach.
#[derive(Debug, Clone, Copy)]
pub struct AddressPermit<'a> {
    /// `egress.allow_private_destinations`: every non-public class but cloud metadata.
    pub private: bool,
    /// `egress.allow_ips`: named explicitly, so allowed whatever their class.
    pub ips: &'a [Cidr],
    /// Every address (servers and parents named in the configuration).
    pub any: bool,
}

impl AddressPermit<'_> {
    /// Servers and parents named in the configuration: any address.
    pub const CONFIGURED: AddressPermit<'static> = AddressPermit {
        private: true,
        ips: &[],
        any: true,
    };

    pub fn allows(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let class = classify(ip);
        if self.any {
            return Ok(());
        }
        if class.is_public()
            || self.ips.iter().any(|c| c.contains(ip))
            || (self.private && class != AddressClass::Metadata)
        {
            Ok(())
        } else {
            Err(class)
        }
    }

    /// The addresses that may be reached, or the refusal for the first one.
    pub fn filter(&self, name: &str, ips: &[IpAddr]) -> Result<Vec<IpAddr>, ProxyError> {
        let allowed: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| self.allows(*ip).is_ok())
            .collect();
        if allowed.is_empty() {
            let ip = ips.first().copied().unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let class = classify(ip);
            let hint = if class == AddressClass::Metadata {
                " (allowed only when named in egress.allow_ips)"
            } else {
                ""
            };
            let what = if name == ip.to_string() {
                format!("{ip} is")
            } else {
                format!("{name} resolves to {ip},")
            };
            return Err(ProxyError::new(
                ErrorKind::DestinationProhibited,
                format!(
                    "{what} a {} address; the proxy does not connect to such destinations{hint}",
                    class.as_str()
                ),
            ));
        }
        Ok(allowed)
    }
}

/// The error for a failed lookup of `name`.
pub fn resolve_error(name: &str, e: ResolveError) -> ProxyError {
    match e {
        ResolveError::Timeout => {
            ProxyError::new(ErrorKind::DnsTimeout, format!("resolving {name} timed out"))
        }
        ResolveError::NotFound(m) | ResolveError::Failed(m) => {
            ProxyError::new(ErrorKind::DnsError, m)
        }
    }
}

pub type EgressError = ProxyError;

pub struct Connector {
    pub resolver: Arc<Resolver>,
    /// `egress.bind`: source addresses, used in turn.
    pub sources: ArcSwap<Vec<IpAddr>>,
    next_source: AtomicUsize,
}

impl Connector {
    pub fn new(resolver: Arc<Resolver>, sources: Vec<IpAddr>) -> Connector {
        Connector {
            resolver,
            sources: ArcSwap::from_pointee(sources),
            next_source: AtomicUsize::new(0),
        }
    }

    /// The next source address of the destination's family, if any are set.
    fn source_for(&self, dst: SocketAddr) -> Option<IpAddr> {
        let sources = self.sources.load();
        let family: Vec<&IpAddr> = sources
            .iter()
            .filter(|ip| ip.is_ipv4() == dst.is_ipv4())
            .collect();
        if family.is_empty() {
            return None;
        }
        let n = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(*family[n % family.len()])
    }

    /// Connects to `dest:port`, returning the stream and the address reached.
    /// `pinned` limits the candidates to addresses the rules already approved.
    pub async fn connect(
        &self,
        dest: &Destination,
        port: u16,
        permit: AddressPermit<'_>,
        pinned: Option<&[IpAddr]>,
        connect_timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr), EgressError> {
        let deadline = Instant::now() + connect_timeout;
        let (ips, name) = match (dest, pinned) {
            (_, Some(ips)) => (ips.to_vec(), dest.rule_host().into_owned()),
            (Destination::Ip(ip), None) => (vec![*ip], postern_policy::addr::ip_string(*ip)),
            (Destination::Name(name), None) => {
                let ips = match timeout(connect_timeout, self.resolver.resolve(name)).await {
                    Err(_) => return Err(resolve_error(name, ResolveError::Timeout)),
                    Ok(Err(e)) => return Err(resolve_error(name, e)),
                    Ok(Ok(ips)) => ips,
                };
                (ips, name.clone())
            }
        };
        let allowed = permit.filter(&name, &ips)?;
        let addrs = happy_eyeballs_order(&allowed, port);
        self.connect_any(addrs, deadline).await
    }
}

/// One connection attempt, from `source` when given.
///
/// Built by hand rather than with `TcpStream::connect`: TCP_NODELAY is set
/// before connecting, and the outcome is read from the readiness the reactor
/// reports (an error or hang-up when the attempt failed) instead of asking
/// the socket with `getsockopt(SO_ERROR)`: one system call fewer per
/// connection, on a path that opens one per tunnel.
async fn open(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = stream.ready(tokio::io::Interest::WRITABLE).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// RFC 8305 §4: alternate address families, starting with the first one given.
fn happy_eyeballs_order(ips: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let first_v6 = ips.first().is_some_and(IpAddr::is_ipv6);
    let (mut a, mut b): (Vec<&IpAddr>, Vec<&IpAddr>) =
        ips.iter().partition(|ip| ip.is_ipv6() == first_v6);
    a.reverse();
    b.reverse();
    let mut out = Vec::with_capacity(ips.len());
    while let Some(ip) = a.pop() {
        out.push(SocketAddr::new(*ip, port));
        if let Some(ip) = b.pop() {
            out.push(SocketAddr::new(*ip, port));
        }
    }
    out.extend(b.into_iter().rev().map(|ip| SocketAddr::new(*ip, port)));
    out
}

impl Connector {
    /// Starts an attempt, then another every 250 ms or as soon as one fails; the
    /// first to connect wins and the others are dropped.
    async fn connect_any(
        &self,
        addrs: Vec<SocketAddr>,
        deadline: Instant,
    ) -> Result<(TcpStream, SocketAddr), EgressError> {
        if let [addr] = addrs[..] {
            // One candidate (an address literal, usually): nothing to race.
            let source = self.source_for(addr);
            return match tokio::time::timeout_at(deadline, open(addr, source)).await {
                Ok(Ok(stream)) => Ok((stream, addr)),
                Ok(Err(e)) => Err(connect_error(Some(e))),
                Err(_) => Err(ProxyError::new(
                    ErrorKind::ConnectionTimeout,
                    "no connection within the connect timeout",
                )),
            };
        }
        let mut pending = addrs.into_iter();
        let mut attempts = JoinSet::new();
        let mut last_error: Option<std::io::Error> = None;
        let start_next = |attempts: &mut JoinSet<_>,
                          pending: &mut std::vec::IntoIter<SocketAddr>| {
            if let Some(addr) = pending.next() {
                let source = self.source_for(addr);
                attempts.spawn(async move { (addr, open(addr, source).await) });
                true
            } else {
                false
            }
        };
        start_next(&mut attempts, &mut pending);
        let mut next_at = Instant::now() + CONNECTION_ATTEMPT_DELAY;
        loop {
            tokio::select! {
                joined = attempts.join_next() => {
                    match joined {
                        Some(Ok((addr, Ok(stream)))) => {
                                    return Ok((stream, addr));
                        }
                        Some(Ok((_, Err(e)))) => {
                            last_error = Some(e);
                            if start_next(&mut attempts, &mut pending) {
                                next_at = Instant::now() + CONNECTION_ATTEMPT_DELAY;
                            }
                        }
                        Some(Err(_)) => {}
                        None => {
                            if !start_next(&mut attempts, &mut pending) {
                                return Err(connect_error(last_error));
                            }
                        }
                    }
                }
                _ = sleep_until(next_at), if pending.len() > 0 => {
                    start_next(&mut attempts, &mut pending);
                    next_at = Instant::now() + CONNECTION_ATTEMPT_DELAY;
                }
                _ = sleep_until(deadline) => {
                    return Err(ProxyError::new(ErrorKind::ConnectionTimeout, "no connection within the connect timeout"));
                }
            }
        }
    }
}

fn connect_error(e: Option<std::io::Error>) -> ProxyError {
    match e {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ProxyError::new(ErrorKind::ConnectionRefused, "connection refused")
        }
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            ProxyError::new(ErrorKind::ConnectionTimeout, "connection timed out")
        }
        Some(e) => ProxyError::new(ErrorKind::DestinationUnavailable, e.to_string()),
        None => ProxyError::new(
            ErrorKind::DestinationUnavailable,
            "no address to connect to",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Destination::parse("Example.COM"),
            Ok(Destination::Name("example.com".into()))
        );
        assert_eq!(
            Destination::parse("[::1]"),
            Ok(Destination::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            Destination::parse("10.0.0.1"),
            Ok(Destination::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            Destination::parse("0x7f.1"),
            Ok(Destination::Ip("127.0.0.1".parse().unwrap()))
        );
        for bad in ["", "a b", "a\r\nb", "[::1", "ex%0ample", "a/b", "[zz]"] {
            assert!(Destination::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interleaves_families() {
        let ips: Vec<IpAddr> = ["::1", "::2", "127.0.0.1", "127.0.0.2", "::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let order: Vec<String> = happy_eyeballs_order(&ips, 80)
            .iter()
            .map(|a| a.ip().to_string())
            .collect();
        assert_eq!(order, ["::1", "127.0.0.1", "::2", "127.0.0.2", "::3"]);
    }

    #[tokio::test]
    async fn refuses_private_and_reports_refused() {
        let c = Connector::new(Arc::new(Resolver::from_system()), Vec::new());
        let err = c
            .connect(
                &Destination::Ip("127.0.0.1".parse().unwrap()),
                9,
                AddressPermit {
                    private: false,
                    ips: &[],
                    any: false,
                },
                None,
                Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DestinationProhibited);
        // A port nothing listens on: bind one, learn it, close it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let err = c
            .connect(
                &Destination::Ip("127.0.0.1".parse().unwrap()),
                port,
                AddressPermit {
                    private: true,
                    ips: &[],
                    any: false,
                },
                None,
                Duration::from_secs(2),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConnectionRefused);
    }

    #[test]
    fn metadata_needs_naming() {
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let private = AddressPermit {
            private: true,
            ips: &[],
            any: false,
        };
        assert_eq!(private.allows(metadata), Err(AddressClass::Metadata));
        assert!(private.allows("10.0.0.1".parse().unwrap()).is_ok());
        let named = ["169.254.169.254".parse().unwrap()];
        let explicit = AddressPermit {
            private: false,
            ips: &named,
            any: false,
        };
        assert!(explicit.allows(metadata).is_ok());
        assert!(explicit.allows("10.0.0.1".parse().unwrap()).is_err());
        let err = private.filter("meta.test", &[metadata]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::DestinationProhibited);
        assert!(err.detail.contains("egress.allow_ips"), "{}", err.detail);
    }
}
